"""Plot training loss and test error against iterations for one or more runs (paper Fig. 1/6).

    keras-preact plot runs/r110_original runs/r110_preact --out curves.png

Runs that share an arch and placement are told apart by the settings that differ
(or by their folder).
"""

import os

from keras_preact.cli import common as _cli


def parser():
    p = _cli.Parser(__doc__)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories written by keras-preact train")
    p.add_argument("--out", default="curves.png", help="the PNG to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out where it exists")
    return p


def plot(args):
    from keras_preact.train.plotting import plot_runs

    _cli.check_outputs([args.out], args.overwrite)
    missing = [d for d in args.run_dirs if not os.path.exists(os.path.join(d, "log.csv"))]
    if missing:
        raise ValueError(f"not a run directory (no log.csv yet): {', '.join(missing)}")
    print(plot_runs(args.run_dirs, args.out))


def main(argv=None):
    return _cli.run(plot, parser().parse_args(argv))

