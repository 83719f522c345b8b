"""Benchmarks that print figures (nothing is asserted).

    keras-preact benchmark infer --arch resnet164               # export to a temp dir, time all
    keras-preact benchmark infer --export-dir savedmodels/digits   # time an existing export
    keras-preact benchmark backup --arch resnet1001              # the cost of a safe backup
    keras-preact benchmark train --arch resnet1001               # scanned vs unrolled vs plain

`infer` prints, for this CPU, latency at batch 1 and throughput at --batch for Keras
predict_on_batch, the SavedModel, each LiteRT variant (and ONNX), plus artifact sizes.
`backup` prints the time of an epoch-end resume-state write, atomic (keras_preact) against
in place (Keras' BackupAndRestore), alternating in one process.
`train` prints build time, first training step (tracing and compilation), steady images/s
and peak memory of keras_preact unrolled and scanned (scan_units) and of the plain-Keras
reference network (../shared/bench/anchor_keras.py beside the current folder or the checkout,
or $KERAS_PREACT_ANCHOR) and, on torch, first of plain PyTorch (anchor_torch.py's network, a
plain float32 training loop; or $KERAS_PREACT_ANCHOR_TORCH), each in its own process, with
ratios to the first row. KERAS_BACKEND picks the backend.
"""

import os
import tempfile

from keras_preact.cli import common as _cli
from keras_preact.deploy import export
from keras_preact.models import registry
from keras_preact.data.datasets import DATASETS


def parser():
    p = _cli.Parser(__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_cli.Parser)
    infer = sub.add_parser("infer", help="inference latency and throughput per runtime",
                           description=__doc__)
    what = infer.add_argument_group("what to time (one of)").add_mutually_exclusive_group(
        required=True)
    what.add_argument("--arch", metavar="ARCH", help=_cli.choices_help(
        "an untrained registry network (exported to a temp dir)", registry.list_models()))
    what.add_argument("--model", metavar="PATH",
                      help="a training run directory or .keras file (exported to a temp dir)")
    what.add_argument("--export-dir", metavar="DIR", help="a folder written by keras-preact export")
    artifacts = infer.add_argument_group("artifacts (with --arch or --model)")
    artifacts.add_argument("--formats", nargs="+", default=["saved_model", "tflite"],
                           choices=export.FORMATS, help="what to export and time")
    artifacts.add_argument("--quantize", nargs="+", default=list(export.QUANTIZATIONS),
                           choices=export.QUANTIZATIONS, help="LiteRT variants")
    artifacts.add_argument("--dataset", metavar="NAME", help=_cli.choices_help(
        "calibration data for int8 (default: the run's, or random pixels for --arch)", DATASETS))
    timing = infer.add_argument_group("timing")
    timing.add_argument("--batch", type=_cli.positive_int, default=32,
                        help="batch of the throughput figure")
    timing.add_argument("--repeats", type=_cli.positive_int, default=20,
                        help="timed runs per figure (the median is printed)")
    timing.add_argument("--threads", type=_cli.positive_int,
                        help="LiteRT and ONNX Runtime threads (default: every CPU)")
    backup = sub.add_parser("backup", help="the cost of writing the resume state atomically",
                            description=__doc__)
    backup.add_argument("--arch", default="resnet164", metavar="ARCH", help=_cli.choices_help(
        "the network whose state is written", registry.list_models()))
    backup.add_argument("--repeats", type=_cli.positive_int, default=7,
                        help="writes of each kind (the median is printed)")
    train = sub.add_parser("train", help="training speed: scanned, unrolled, plain Keras",
                           description=__doc__)
    train.add_argument("--arch", default="resnet164", metavar="ARCH", help=_cli.choices_help(
        "the network", registry.list_models()))
    train.add_argument("--batch", type=_cli.positive_int, default=8, help="batch size")
    train.add_argument("--steps", type=_cli.positive_int, default=3,
                       help="steps per epoch (3 epochs; the best later one is the steady speed)")
    forms = train.add_mutually_exclusive_group()
    forms.add_argument("--scan", dest="forms", action="store_const", const=("scanned",),
                       help="time only the scanned network")
    forms.add_argument("--no-scan", dest="forms", action="store_const", const=("unrolled",),
                       help="time only the unrolled network")
    train.add_argument("--remat", action="store_true",
                       help="recompute the scanned units' activations in the backward pass")
    train.add_argument("--precision", default="float32",
                       choices=("float32", "mixed_float16", "mixed_bfloat16"),
                       help="Keras dtype policy (mixed_bfloat16 on accelerators)")
    train.add_argument("--jit-compile", default="auto", choices=("auto", "on", "off"),
                       help="keras_preact's XLA setting; auto: as train.py")
    train.add_argument("--no-reference", dest="reference", action="store_false",
                       help="skip the references, plain Keras and, on torch, plain PyTorch (the "
                       "plain-Keras unrolled JAX ResNet-1001 "
                       "needs more than 24 GB to compile on a CPU)")
    train.add_argument("--timeout", type=_cli.positive_int, default=600,
                       help="seconds each variant may take")
    return p


def train(args):
    from keras_preact.deploy import benchmark

    benchmark.train(args.arch, batch=args.batch, steps=args.steps,
                    forms=args.forms or ("unrolled", "scanned"), remat=args.remat,
                    precision=args.precision, jit=args.jit_compile,
                    reference=args.reference, timeout=args.timeout)


def backup(args):
    _cli.import_tensorflow()
    from keras_preact.train import training

    training.benchmark_backup(args.arch, repeats=args.repeats)


def infer(args):
    from keras_preact.deploy import benchmark

    if args.export_dir:
        benchmark.check_export(args.export_dir, args.batch)  # (before TensorFlow loads)
        _cli.import_tensorflow()
        benchmark.infer(args.export_dir, batch=args.batch, repeats=args.repeats,
                        threads=args.threads)
        return
    export.check_formats(args.formats, args.quantize)
    _cli.import_tensorflow()
    source = export.load_source(model=args.model, arch=args.arch, dataset=args.dataset)
    benchmark.check_batch(source.input_shape, args.batch)  # before the export
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "export")
        print(f"exporting {source.origin} (not verified: timing only)")
        export.export_model(source, out, formats=args.formats, quantize=args.quantize,
                            tflite_batch=None, verify=False, representative_samples=100)
        benchmark.infer(out, batch=args.batch, repeats=args.repeats, threads=args.threads,
                        serving=export.build_serving(source))


def main(argv=None):
    args = parser().parse_args(argv)
    return _cli.run({"infer": infer, "backup": backup, "train": train}[args.command], args)

