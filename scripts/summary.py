#!/usr/bin/env python
"""Build a model from the registry and print its summary and metadata.

    python scripts/summary.py resnet164
    python scripts/summary.py resnet110 --placement original --shortcut exclusive_gating:gate_bias=-6
    python scripts/summary.py --list
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_preact as kp  # noqa: E402
from keras_preact.shortcuts import parse_shortcut  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arch", nargs="?", help=f"one of: {', '.join(kp.list_models())}")
    p.add_argument("--list", action="store_true", help="print the model table and exit")
    p.add_argument("--classes", type=int, default=None)
    p.add_argument("--placement", default="full_preact", help=", ".join(kp.PLACEMENTS))
    p.add_argument("--shortcut", default="identity",
                   help=f"NAME[:key=value,...], NAME one of {', '.join(kp.SHORTCUTS)}")
    p.add_argument("--projection", default="B", choices=kp.PROJECTIONS)
    p.add_argument("--no-summary", action="store_true", help="print only the metadata")
    args = p.parse_args(argv)
    if args.list:
        print(kp.registry.markdown_table())
        return 0
    if args.arch is None:
        p.error("give an arch name, or --list")
    try:
        model = kp.get_model(args.arch, classes=args.classes, placement=args.placement,
                             shortcut=parse_shortcut(args.shortcut), projection=args.projection)
    except ValueError as e:
        p.error(str(e))
    if not args.no_summary:
        model.summary()
    info = kp.model_info(args.arch)
    info["params"] = f"{info['params']:,} (default configuration)"
    info["this_model"] = f"{model.name}: {sum(int(w.numpy().size) for w in model.trainable_weights):,} trainable parameters"
    for key, value in info.items():
        print(f"{key}: {json.dumps(value) if isinstance(value, dict) else value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
