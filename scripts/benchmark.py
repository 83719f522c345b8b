#!/usr/bin/env python
"""Benchmarks that print figures (nothing is asserted).

    python scripts/benchmark.py infer --arch resnet164               # export to a temp dir, time all
    python scripts/benchmark.py infer --export-dir savedmodels/digits   # time an existing export

`infer` prints, for this CPU, latency at batch 1 and throughput at --batch for Keras
predict_on_batch, the SavedModel, each LiteRT variant (and ONNX), plus artifact sizes.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_preact import benchmark, export  # noqa: E402
from keras_preact.data import DataUnavailableError  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    infer = sub.add_parser("infer", help="inference latency and throughput per runtime")
    what = infer.add_mutually_exclusive_group(required=True)
    what.add_argument("--arch", help="an untrained registry network (exported to a temp dir)")
    what.add_argument("--model", help="a training run directory or .keras file (exported to a temp dir)")
    what.add_argument("--export-dir", help="a folder written by scripts/export.py")
    infer.add_argument("--formats", nargs="+", default=["saved_model", "tflite"], choices=export.FORMATS)
    infer.add_argument("--quantize", nargs="+", default=list(export.QUANTIZATIONS),
                       choices=export.QUANTIZATIONS)
    infer.add_argument("--dataset", help="calibration data for int8 (default: the run's, or "
                       "random pixels for --arch)")
    infer.add_argument("--batch", type=int, default=32, help="batch of the throughput figure")
    infer.add_argument("--repeats", type=int, default=20)
    infer.add_argument("--threads", type=int, default=None, help="LiteRT threads (default: all CPUs)")
    return p, p.parse_args(argv)


def main(argv=None):
    parser, args = parse(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error("--batch and --repeats must be >= 1")
    try:
        if args.export_dir:
            if not os.path.isfile(os.path.join(args.export_dir, export.MANIFEST)):
                raise FileNotFoundError(f"{args.export_dir!r} holds no {export.MANIFEST}: give a "
                                        "folder written by scripts/export.py.")
            benchmark.infer(args.export_dir, batch=args.batch, repeats=args.repeats,
                            threads=args.threads)
            return 0
        source = export.load_source(model=args.model, arch=args.arch, dataset=args.dataset)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "export")
            print(f"exporting {source.origin} (not verified: timing only)")
            export.export_model(source, out, formats=args.formats, quantize=args.quantize,
                                tflite_batch=None, verify=False, representative_samples=100)
            benchmark.infer(out, batch=args.batch, repeats=args.repeats, threads=args.threads,
                            serving=export.build_serving(source))
    except (ValueError, FileNotFoundError, DataUnavailableError, export.ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
