"""Measure signal propagation unit by unit (the paper's Eq. 4, 5 and 8, Sec. 4.2).

    keras-preact analyze resnet1001+placement=original resnet1001 --out docs/propagation_1001
    keras-preact analyze resnet110 resnet110+shortcut=constant_scaling:scale=0.5 \\
        resnet110+shortcut=exclusive_gating:gate_bias=0 --data noise --out gating
    keras-preact analyze runs/r110_original runs/r110_preact --out trained

Each MODEL is an arch name, optionally with +placement=, +shortcut= (as train.py's
--shortcut) and +projection=, built fresh (at initialisation, seeded), or a run directory
(its last.keras, fed with the run's normalization) or a .keras file. For each residual
unit it records ||x_l||, ||F(x_l)||, ||dE/dx_l||, the share of the after-addition ReLU's
input that is negative, and the share of dead ReLU channels, on one batch of test images;
it writes OUT.csv and OUT.png (one line per model; existing ones only with --overwrite)
and prints a line per model.
"""


from keras_preact.cli import common as _cli
from keras_preact.lab.analysis import DATA_CHOICES
from keras_preact.vocab import extras


def parser():
    p = _cli.Parser(__doc__)
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="ARCH[+placement=NAME][+shortcut=SPEC][+projection=A|B|C], a run "
                   "directory or a .keras file")
    p.add_argument("--data", default="digits", choices=DATA_CHOICES,
                   help="the images fed: a data set's test images, or standard-normal noise")
    p.add_argument("--cifar-archive", metavar="PATH",
                   help="cifar-10-python.tar.gz or cifar-100-python.tar.gz, read directly")
    p.add_argument("--data-dir", help="tensorflow-datasets data_dir")
    p.add_argument("--batch", type=_cli.positive_int, default=32, help="images in the batch")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the fresh networks' initialisation and of the batch")
    p.add_argument("--bn", default="auto", choices=("auto", "batch", "moving"),
                   help="BN statistics: the batch's (as in a training step) or the moving ones; "
                   "auto: the batch's for fresh networks (their moving statistics are not yet "
                   "estimated), the moving ones for trained checkpoints")
    p.add_argument("--out", default="propagation", metavar="PREFIX",
                   help="writes PREFIX.csv and PREFIX.png")
    p.add_argument("--overwrite", action="store_true",
                   help="replace PREFIX.csv and PREFIX.png where they exist")
    return p


def analyze(args):
    _cli.check_outputs([f"{args.out}.csv", f"{args.out}.png"], args.overwrite)
    extras.require("matplotlib", what="The propagation figure")  # (before the measurement)
    _cli.import_tensorflow()
    from keras_preact.lab import analysis

    series = analysis.measure(args.models, data=args.data, batch=args.batch, seed=args.seed,
                              bn=args.bn, cifar_archive=args.cifar_archive,
                              data_dir=args.data_dir)
    print(analysis.write_csv(series, f"{args.out}.csv"))
    print(analysis.plot(series, f"{args.out}.png"))


def main(argv=None):
    return _cli.run(analyze, parser().parse_args(argv))

