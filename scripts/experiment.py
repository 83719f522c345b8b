#!/usr/bin/env python
"""Run one of the paper's experiments: a named grid of training runs.

    python scripts/experiment.py table2 --out runs/table2                 # the paper's grid
    python scripts/experiment.py table1 --arch resnet20 --dataset digits --iterations 300 \\
        --seeds 2 --out runs/table1_digits                                # scaled down
    python scripts/experiment.py fig1 --dry-run --out runs/fig1           # what it would run

Each variant of the grid trains once per seed into OUT/<variant>/seed<k> (scripts/train.py's
run directory). Running the same command again skips the finished runs and resumes an
interrupted one; a run whose loss diverged is recorded as failed and not retried. At the
end OUT/results.md holds the measured test errors (mean and standard deviation over seeds)
beside the paper's figures, and OUT/curves.png the training curves (seed 0 of each variant).
"""

import sys

import _cli
from keras_preact.train import config as cfg
from keras_preact.lab.experiments import GRIDS


def parser():
    p = _cli.Parser(__doc__)
    p.add_argument("name", metavar="NAME", choices=list(GRIDS),
                   help=_cli.choices_help("the experiment", GRIDS))
    p.add_argument("--out", required=True, metavar="DIR", help="the folder of the grid's runs")
    p.add_argument("--arch", help="run every variant at this depth instead (e.g. resnet20)")
    p.add_argument("--dataset", metavar="NAME",
                   help=_cli.choices_help("run on this data set instead", cfg.DATASET_NAMES))
    p.add_argument("--data-dir", help="tensorflow-datasets data_dir")
    p.add_argument("--cifar-archive", metavar="PATH",
                   help="cifar-10-python.tar.gz or cifar-100-python.tar.gz, read directly")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=_cli.positive_int,
                        help="a scaled-down budget: total iterations (the milestones scale)")
    budget.add_argument("--epochs", type=_cli.positive_int, help="or total epochs")
    p.add_argument("--steps-per-epoch", type=_cli.positive_int,
                   help="batches per epoch (default: the training set's size / batch)")
    p.add_argument("--batch-size", type=_cli.positive_int, help="global batch size")
    p.add_argument("--lr", type=float, help="learning rate after the warm-up (default: 0.1)")
    p.add_argument("--warmup-iterations", type=_cli.positive_int, metavar="N",
                   help="warm up at 0.01 for N iterations (default: 400, scaled down with "
                   "the budget)")
    p.add_argument("--seeds", type=_cli.positive_int, default=1,
                   help="runs per variant (seeds 0..N-1): mean and standard deviation")
    p.add_argument("--variants", nargs="+", metavar="KEY",
                   help="only these variants of the grid: their unit and shortcut, e.g. "
                   "original 'original conv1x1' (as --dry-run shows them)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs and their train.py commands; train nothing")
    return p


def experiment(args):
    from keras_preact.lab import experiments

    options = {} if args.lr is None else {"lr": args.lr}
    options.update(arch=args.arch, dataset=args.dataset, iterations=args.iterations,
                   epochs=args.epochs, seeds=args.seeds, batch_size=args.batch_size,
                   variants=args.variants, steps_per_epoch=args.steps_per_epoch,
                   warmup_iterations=args.warmup_iterations,
                   data_dir=args.data_dir, cifar_archive=args.cifar_archive, verbose=2)
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


if __name__ == "__main__":
    sys.exit(main())
