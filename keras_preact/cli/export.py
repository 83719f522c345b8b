"""Export a trained run, a converted model or an arch to SavedModel, LiteRT and ONNX, verified.

    keras-preact export --model runs/digits --quantize none int8
    keras-preact export --model runs/r164/best.keras --formats saved_model tflite onnx
    keras-preact export --arch resnet164 --formats tflite --out savedmodels/resnet164_graph
    keras-preact export --arch resnet50 --weights imagenet --dataset imagenet2012

Every artifact is loaded by its runtime and compared with the Keras model before the
folder appears at --out (default savedmodels/NAME); see savedmodels/README.md. An
existing --out is replaced only with --overwrite, and only if it is an export.
"""

import os

from keras_preact.cli import common as _cli
from keras_preact.vocab import catalog
from keras_preact.deploy import export
from keras_preact.models import registry
from keras_preact.data.datasets import DATASETS


def parser():
    p = _cli.Parser(__doc__)
    source = p.add_argument_group("what to export (one of)")
    what = source.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", metavar="PATH", help="a training run directory "
                      "(keras-preact train --model-dir) or a .keras file")
    what.add_argument("--arch", metavar="ARCH", help=_cli.choices_help(
        "a registry network: untrained (graph only), or with --weights", registry.list_models()))
    source.add_argument("--checkpoint", default="last", choices=export.CHECKPOINTS,
                        help="which checkpoint of a run directory")
    arch = p.add_argument_group("with --arch")
    arch.add_argument("--classes", type=_cli.positive_int, help="classes of the network")
    arch.add_argument("--placement", metavar="NAME", help=_cli.choices_help(
        "residual unit", catalog.PLACEMENT_FIGURES))
    arch.add_argument("--shortcut", metavar="NAME[:key=value,...]", help=_cli.choices_help(
        "shortcut", catalog.SHORTCUT_OPTIONS))
    arch.add_argument("--weights", metavar="imagenet|PATH", help="'imagenet' "
                      "(keras.applications' ResNet V2 weights: resnet50/101/152, their [-1, 1] "
                      "preprocessing inside the artifacts), their .h5 file, or a "
                      ".weights.h5/.keras file")
    arch.add_argument("--layout", help=_cli.choices_help("ImageNet layout", catalog.LAYOUTS))
    arch.add_argument("--input-shape", type=_cli.positive_int, nargs=3, metavar=("H", "W", "C"),
                      help="image size of the artifacts (also for a model that takes any size)")
    formats = p.add_argument_group("artifacts")
    formats.add_argument("--formats", nargs="+", default=["saved_model", "tflite"],
                         choices=export.FORMATS, help="what to write")
    formats.add_argument("--quantize", nargs="+", default=["none"], choices=export.QUANTIZATIONS,
                         help="LiteRT variants: none (float32), float16, dynamic (int8 weights), "
                         "int8 (full integer, calibrated on training images)")
    formats.add_argument("--no-preprocessing", dest="preprocessing", action="store_false",
                         default=None, help="export the bare network (normalized inputs) "
                         "instead of raw pixels in")
    formats.add_argument("--no-softmax", dest="softmax", action="store_false",
                         help="output logits only")
    formats.add_argument("--input-dtype", default="float32", choices=("float32", "uint8"),
                         help="dtype of the raw-pixel input (uint8 needs the preprocessing)")
    formats.add_argument("--tflite-batch", type=_cli.non_negative_int, default=1,
                         help="fixed LiteRT batch size; 0 for a dynamic batch")
    data = p.add_argument_group("data (calibration, verification, normalization)")
    data.add_argument("--dataset", metavar="NAME", help=_cli.choices_help(
        "for --arch or a bare .keras file (a run directory knows its own)", DATASETS))
    data.add_argument("--data-dir", help="tensorflow-datasets data_dir")
    data.add_argument("--cifar-archive", metavar="PATH",
                      help="cifar-10-python.tar.gz / cifar-100-python.tar.gz")
    data.add_argument("--mean", type=float, nargs="+", help="per-channel normalization mean (0-255)")
    data.add_argument("--std", type=float, nargs="+", help="per-channel normalization std (0-255)")
    data.add_argument("--representative-samples", type=_cli.positive_int, default=200,
                      help="training images that calibrate --quantize int8")
    data.add_argument("--verify-samples", type=_cli.positive_int, default=200,
                      help="held-out images each artifact is checked on")
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="DIR", help="output folder (default: savedmodels/NAME)")
    out.add_argument("--overwrite", action="store_true",
                     help="replace an existing export at --out (never a folder of other files)")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if (args.mean is None) != (args.std is None):
        p.error("--mean and --std go together")
    if args.arch is None and (args.placement or args.shortcut or args.classes or args.weights
                              or args.layout):
        p.error("--classes, --placement, --shortcut, --weights and --layout apply to --arch")
    if args.out is not None and not args.out.strip():
        p.error("--out is empty: give the folder to write, or leave --out out for "
                "savedmodels/NAME")
    name = args.arch or os.path.basename(os.path.normpath(args.model)).removesuffix(".keras")
    out = args.out if args.out is not None else os.path.join("savedmodels", name)
    return _cli.run(export_to, args, out)


def export_to(args, out):
    # Everything that needs no backend is checked first.
    export.check_formats(args.formats, args.quantize, args.tflite_batch or None,
                         args.representative_samples, args.verify_samples)
    export.check_target(out, args.overwrite)
    builder = {k: v for k, v in (("placement", args.placement), ("shortcut", args.shortcut),
                                 ("weights", args.weights), ("layout", args.layout)) if v}
    _cli.import_tensorflow()
    source = export.load_source(
        model=args.model, arch=args.arch, checkpoint=args.checkpoint, classes=args.classes,
        input_shape=args.input_shape, dataset=args.dataset, data_dir=args.data_dir,
        cifar_archive=args.cifar_archive,
        normalization=(args.mean, args.std) if args.mean else None, **builder)
    print(f"exporting {source.origin} to {out}")
    for note in source.notes:
        print(f"note: {note}")
    manifest = export.export_model(
        source, out, formats=args.formats, quantize=args.quantize,
        preprocessing_on=args.preprocessing, softmax=args.softmax, input_dtype=args.input_dtype,
        tflite_batch=args.tflite_batch or None,
        representative_samples=args.representative_samples,
        verify_samples=args.verify_samples, overwrite=args.overwrite)
    print(f"wrote {out} ({len(manifest['artifacts'])} artifacts, all verified); "
          f"manifest: {os.path.join(out, export.MANIFEST)}")

