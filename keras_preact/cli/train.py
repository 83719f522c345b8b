"""Train a pre-activation ResNet with the paper's recipe (resumable).

    keras-preact train --arch resnet20 --dataset digits --batch-size 64 --epochs 15 --model-dir runs/digits
    keras-preact train --arch resnet164 --dataset cifar10 --model-dir runs/r164
    keras-preact train --arch resnet1001 --model-dir runs/r1001   # the paper's 4.92% run

Running the same command again resumes an interrupted run (and says so); a finished run
is left as it is. The whole command line is checked before anything is written.
"""


from keras_preact.cli import common as _cli
from keras_preact.train import config as cfg


def parser():
    p = _cli.Parser(__doc__)
    _cli.add_config_options(p)  # every field of TrainConfig, as declared there
    return p


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

