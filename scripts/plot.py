#!/usr/bin/env python
"""Plot training loss and test error against iterations for one or more runs (paper Fig. 1/6).

    python scripts/plot.py runs/r110_original runs/r110_preact --out curves.png
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keras_preact.plotting import plot_runs  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default="curves.png")
    args = p.parse_args()
    missing = [d for d in args.run_dirs if not os.path.exists(os.path.join(d, "log.csv"))]
    if missing:
        p.error(f"not a run directory (no log.csv): {', '.join(missing)}")
    print(plot_runs(args.run_dirs, args.out))
