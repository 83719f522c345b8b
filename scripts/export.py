#!/usr/bin/env python
"""Export a trained run (or an untrained arch) to SavedModel, LiteRT and ONNX, verified.

    python scripts/export.py --model runs/digits --quantize none int8
    python scripts/export.py --model runs/r164/best.keras --formats saved_model tflite onnx
    python scripts/export.py --arch resnet164 --formats tflite --out savedmodels/resnet164_graph

Every artifact is loaded by its runtime and compared with the Keras model before the
folder appears at --out (default savedmodels/NAME); see savedmodels/README.md.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_preact import export  # noqa: E402
from keras_preact.data import DataUnavailableError  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="a training run directory (scripts/train.py --model-dir) "
                      "or a .keras file")
    what.add_argument("--arch", help="export an untrained registry network (graph only)")
    p.add_argument("--checkpoint", default="last", choices=export.CHECKPOINTS,
                   help="which checkpoint of a run directory (default: last)")
    p.add_argument("--formats", nargs="+", default=["saved_model", "tflite"], choices=export.FORMATS)
    p.add_argument("--quantize", nargs="+", default=["none"], choices=export.QUANTIZATIONS,
                   help="LiteRT variants: none (float32), float16, dynamic (int8 weights), "
                   "int8 (full integer, calibrated on training images)")
    p.add_argument("--out", help="output folder (default: savedmodels/NAME)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-preprocessing", dest="preprocessing", action="store_false", default=None,
                   help="export the bare network (normalised inputs) instead of raw pixels in")
    p.add_argument("--no-softmax", dest="softmax", action="store_false",
                   help="output logits only")
    p.add_argument("--input-dtype", default="float32", choices=("float32", "uint8"),
                   help="dtype of the raw-pixel input (uint8 needs the preprocessing)")
    p.add_argument("--tflite-batch", type=int, default=1,
                   help="fixed LiteRT batch size; 0 for a dynamic batch (default 1)")
    p.add_argument("--representative-samples", type=int, default=200,
                   help="training images that calibrate --quantize int8")
    p.add_argument("--verify-samples", type=int, default=200,
                   help="held-out images each artifact is checked on")
    p.add_argument("--dataset", help="data for calibration, verification and (for --arch or a "
                   "bare .keras file) the normalisation; a run directory knows its own")
    p.add_argument("--data-dir", help="tensorflow-datasets data_dir")
    p.add_argument("--cifar-archive", help="cifar-10-python.tar.gz / cifar-100-python.tar.gz")
    p.add_argument("--mean", type=float, nargs="+", help="per-channel normalisation mean (0-255)")
    p.add_argument("--std", type=float, nargs="+", help="per-channel normalisation std (0-255)")
    p.add_argument("--classes", type=int, help="with --arch")
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("H", "W", "C"), help="with --arch")
    p.add_argument("--placement", help="with --arch")
    p.add_argument("--shortcut", help="with --arch: NAME[:key=value,...]")
    return p, p.parse_args(argv)


def main(argv=None):
    parser, args = parse(argv)
    if (args.mean is None) != (args.std is None):
        parser.error("--mean and --std go together")
    builder = {}
    if args.placement or args.shortcut:
        if args.arch is None:
            parser.error("--placement and --shortcut apply to --arch")
        from keras_preact.shortcuts import parse_shortcut

        builder = {k: v for k, v in (("placement", args.placement),
                                     ("shortcut", args.shortcut and parse_shortcut(args.shortcut)))
                   if v}
    if args.model is not None and (args.classes or args.input_shape):
        parser.error("--classes and --input-shape apply to --arch")
    name = args.arch or os.path.basename(os.path.normpath(args.model)).removesuffix(".keras")
    out = args.out or os.path.join("savedmodels", name)
    try:
        source = export.load_source(
            model=args.model, arch=args.arch, checkpoint=args.checkpoint, classes=args.classes,
            input_shape=args.input_shape, dataset=args.dataset, data_dir=args.data_dir,
            cifar_archive=args.cifar_archive,
            normalisation=(args.mean, args.std) if args.mean else None, **builder)
        print(f"exporting {source.origin} to {out}")
        manifest = export.export_model(
            source, out, formats=args.formats, quantize=args.quantize,
            preprocessing_on=args.preprocessing, softmax=args.softmax, input_dtype=args.input_dtype,
            tflite_batch=args.tflite_batch or None,
            representative_samples=args.representative_samples,
            verify_samples=args.verify_samples, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError, DataUnavailableError,
            export.ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(manifest['artifacts'])} artifacts, all verified); "
          f"manifest: {os.path.join(out, export.MANIFEST)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
