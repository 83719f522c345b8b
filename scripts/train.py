#!/usr/bin/env python
"""Train a pre-activation ResNet with the paper's recipe (resumable).

    python scripts/train.py --arch resnet20 --dataset digits --epochs 15 --model-dir runs/digits
    python scripts/train.py --arch resnet164 --dataset cifar10 --model-dir runs/r164
    python scripts/train.py --arch resnet1001 --model-dir runs/r1001   # the paper's 4.92% run

Running the same command again resumes an interrupted run (and says so); a finished run
is left as it is. The whole command line is checked before anything is written.
"""

import sys

import _cli
from keras_preact.vocab import catalog
from keras_preact.models import registry
from keras_preact.train import config as cfg


def parser():
    c = cfg.TrainConfig
    p = _cli.Parser(__doc__)
    model = p.add_argument_group("model")
    model.add_argument("--arch", default=c.arch, metavar="ARCH",
                       help=_cli.choices_help("network", registry.list_models()))
    model.add_argument("--placement", default=c.placement, metavar="NAME",
                       help=_cli.choices_help("residual unit of Fig. 4", catalog.PLACEMENT_FIGURES))
    model.add_argument("--shortcut", default=c.shortcut, metavar="NAME[:key=value,...]",
                       help=_cli.choices_help("shortcut of Fig. 2, e.g. constant_scaling:scale=0.5",
                                              catalog.SHORTCUT_OPTIONS))
    model.add_argument("--projection", default=c.projection, choices=catalog.PROJECTIONS,
                       help="where the shape changes: A zero-pads, B projects there, C projects "
                       "on every unit")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", metavar="NAME",
                      help=_cli.choices_help("data set (default: the arch's data set in the paper)",
                                             cfg.DATASET_NAMES))
    data.add_argument("--data-dir", help="tensorflow-datasets data_dir")
    data.add_argument("--cifar-archive", metavar="PATH",
                      help="cifar-10-python.tar.gz or cifar-100-python.tar.gz, read directly")
    data.add_argument("--eval-size", type=int, choices=cfg.EVAL_SIZES,
                      help="imagenet2012 evaluation crop: 224 (default) or the paper's 320")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=int,
                     help="global batch size (default: 128; ImageNet 256)")
    opt.add_argument("--lr", type=float, default=c.lr, help="learning rate after the warm-up")
    opt.add_argument("--momentum", type=float, default=c.momentum, help="SGD momentum, in [0, 1)")
    opt.add_argument("--weight-decay", type=float, default=c.weight_decay,
                     help="the paper's (coupled L2) weight decay")
    _switch(opt, "warmup", "skip the 0.01 warm-up of the first 400 iterations")
    opt.add_argument("--warmup-iterations", type=int, metavar="N",
                     help="warm up for N iterations (default: 400, scaled down with "
                     "--iterations/--epochs)")
    opt.add_argument("--iterations", type=int,
                     help="CIFAR: total iterations (default 64k); the milestones scale with it")
    opt.add_argument("--epochs", type=int,
                     help="total epochs instead (ImageNet default 90); the milestones scale")
    opt.add_argument("--steps-per-epoch", type=int,
                     help="batches per epoch (default: the training set's size / batch)")
    opt.add_argument("--seed", type=int, default=c.seed, help="seed of the data order, "
                     "augmentation and initialisation")
    _switch(opt, "deterministic", "deterministic TensorFlow ops: a resumed run ends with the "
            "weights of an uninterrupted one")
    dist = p.add_argument_group("distribution and precision")
    dist.add_argument("--strategy", default=c.strategy, choices=cfg.STRATEGIES,
                      help="auto: every visible GPU (JAX: DataParallel), else one device")
    _switch(dist, "sync_bn", "synchronised BatchNormalization across replicas (TensorFlow)")
    dist.add_argument("--cpu-replicas", type=int,
                      help="split the CPU into N logical devices (to test strategies)")
    dist.add_argument("--mixed-precision", default=c.mixed_precision, choices=cfg.PRECISIONS,
                      help="mixed-precision compute (slower on a CPU)")
    dist.add_argument("--scan-units", default=c.scan_units, choices=cfg.SCAN_CHOICES,
                      help="identical units as one scanned layer, compiled once per stage; "
                      "auto: the faster form by measurement (scanned without XLA; under "
                      "XLA, as on JAX, only ResNet-1001 and 1202); a resumed run keeps its form")
    _switch(dist, "remat", "recompute the scanned units' activations in the backward pass "
            "(less memory, about one more forward pass of time)")
    dist.add_argument("--steps-per-execution", type=int, default=c.steps_per_execution,
                      metavar="N", help="training steps per compiled call: fewer round trips "
                      "to the host on an accelerator (results are the same)")
    dist.add_argument("--jit-compile", default=c.jit_compile, choices=cfg.JIT_CHOICES,
                      help="XLA; auto: on for JAX and for TensorFlow on one GPU")
    out = p.add_argument_group("output")
    out.add_argument("--model-dir", required=True, metavar="DIR",
                     help="the run directory (created; rerun the command to resume)")
    _switch(out, "overwrite", "discard the run in --model-dir (only what keras_preact wrote)")
    out.add_argument("--verbose", default=c.verbose, choices=cfg.VERBOSITY,
                     help="0 silent, 1 progress bar, 2 one line per epoch; auto: 1 on a "
                     "terminal, else 2")
    _switch(out, "plot", "do not draw curves.png")
    return p


def _switch(group, name, help):
    """The bool field ``name``'s option, spelled by ``cfg.switch`` (as experiments.py writes it)."""
    on = getattr(cfg.TrainConfig, name)
    group.add_argument(cfg.switch(name), dest=name, action="store_false" if on else "store_true",
                       help=help)


def train(config):
    from keras_preact.train import rundir

    checked = rundir.prepare(config)  # every check that needs no backend, first
    _cli.import_tensorflow()
    from keras_preact.train import training

    training.train(checked)


def main(argv=None):
    args = parser().parse_args(argv)
    # (Rerunning a command with --overwrite would discard the run it interrupted.)
    resume = "run the same command again" + (" without --overwrite" if args.overwrite else "")
    return _cli.run(train, cfg.TrainConfig(**vars(args)),
                    resume=f"{resume} to resume from the last finished epoch")


if __name__ == "__main__":
    sys.exit(main())
