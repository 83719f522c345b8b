#!/usr/bin/env python
"""Train a pre-activation ResNet with the paper's recipe (resumable).

    python scripts/train.py --arch resnet20 --dataset digits --epochs 15 --model-dir runs/digits
    python scripts/train.py --arch resnet164 --dataset cifar10 --model-dir runs/r164
    python scripts/train.py --arch resnet1001 --model-dir runs/r1001   # the paper's 4.92% run

Re-running the same command resumes an interrupted run.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_preact import training  # noqa: E402
from keras_preact.data import DataUnavailableError  # noqa: E402


def parse(argv=None):
    c = training.TrainConfig
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=c.arch)
    p.add_argument("--dataset", default=None, help=", ".join(training.DATASET_NAMES)
                   + " (default: the arch's data set in the paper)")
    p.add_argument("--placement", default=c.placement)
    p.add_argument("--shortcut", default=c.shortcut, help="NAME[:key=value,...]")
    p.add_argument("--projection", default=c.projection)
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default 128; ImageNet 256)")
    p.add_argument("--lr", type=float, default=c.lr)
    p.add_argument("--momentum", type=float, default=c.momentum)
    p.add_argument("--weight-decay", type=float, default=c.weight_decay)
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="skip the 0.01 warm-up of the first 400 iterations")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--mixed-precision", default=c.mixed_precision, choices=training.PRECISIONS)
    p.add_argument("--jit-compile", default=c.jit_compile, choices=("auto", "true", "false"))
    p.add_argument("--seed", type=int, default=c.seed)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--strategy", default=c.strategy)
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--cpu-replicas", type=int, default=0,
                   help="split the CPU into N logical devices (for testing strategies)")
    p.add_argument("--eval-size", type=int, default=c.eval_size, choices=(224, 320))
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    p.add_argument("--cifar-archive", default=None,
                   help="path to cifar-10-python.tar.gz or cifar-100-python.tar.gz")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--verbose", type=int, default=1)
    p.add_argument("--no-plot", dest="plot", action="store_false")
    return p, training.TrainConfig(**{k: v for k, v in vars(p.parse_args(argv)).items()})


def main(argv=None):
    parser, config = parse(argv)
    try:
        training.train(config)
    except (ValueError, DataUnavailableError, training.TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
