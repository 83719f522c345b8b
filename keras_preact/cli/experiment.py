"""Run one of the paper's experiments: a named grid of training runs.

    keras-preact experiment table2 --out runs/table2                 # the paper's grid
    keras-preact experiment table1 --arch resnet20 --dataset digits --iterations 300 \\
        --seeds 2 --out runs/table1_digits                                # scaled down
    keras-preact experiment fig1 --dry-run --out runs/fig1           # what it would run

Each variant of the grid trains once per seed into OUT/<variant>/seed<k> (keras-preact train's
run directory). Running the same command again skips the finished runs and resumes an
interrupted one; a run whose loss diverged is recorded as failed and not retried. At the
end OUT/results.md holds the measured test errors (mean and standard deviation over seeds)
beside the paper's figures, and OUT/curves.png the training curves (seed 0 of each variant).
"""


from keras_preact.cli import common as _cli
from keras_preact.train import config as cfg
from keras_preact.lab.experiments import GRIDS


# What a grid takes of train.py's options (declared in keras_preact.train.config).
SHARED = ("arch", "dataset", "data_dir", "cifar_archive", "iterations", "epochs",
          "steps_per_epoch", "batch_size", "lr", "warmup_iterations", "recipe")


def parser():
    p = _cli.Parser(__doc__)
    p.add_argument("name", metavar="NAME", choices=list(GRIDS),
                   help=_cli.choices_help("the experiment", GRIDS))
    p.add_argument("--out", required=True, metavar="DIR", help="the folder of the grid's runs")
    _cli.add_config_options(p, SHARED, help={
        "arch": "run every variant at this depth instead (e.g. resnet20)",
        "dataset": _cli.choices_help("run on this data set instead", cfg.DATASET_NAMES)})
    p.set_defaults(arch=None, dataset=None)  # (the grid's own)
    p.add_argument("--seeds", type=_cli.positive_int, default=1,
                   help="runs per variant (seeds 0..N-1): mean and standard deviation")
    p.add_argument("--variants", nargs="+", metavar="KEY",
                   help="only these variants of the grid: their unit and shortcut, e.g. "
                   "original 'original conv1x1' (as --dry-run shows them)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs and their keras-preact train commands; train nothing")
    return p


def experiment(args):
    from keras_preact.lab import experiments

    options = {name: getattr(args, name) for name in SHARED}
    options.update(seeds=args.seeds, variants=args.variants, verbose=2)
    if args.dry_run:
        runs = experiments.plan(args.name, args.out, **options)
        print(f"{args.name}: {GRIDS[args.name][0]}; {len(runs)} runs")
        for run in runs:
            print(f"[{run.variant.key}] seed {run.seed}, as the paper's {run.variant.label}: "
                  f"{experiments.train_command(run.config)}")
        return
    _cli.import_tensorflow()
    experiments.run_grid(args.name, args.out, **options)


def main(argv=None):
    return _cli.run(experiment, parser().parse_args(argv), resume=(
        "run the same command again: finished runs are skipped, the interrupted one resumes "
        "from its last finished epoch"))

