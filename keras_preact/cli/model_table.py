"""Print the README's tables: the models (from the registry) or the training options.

With --train-options, the table of train.py's options, generated from TrainConfig.
"""

from keras_preact.cli import common as _cli


def main(argv=None):
    p = _cli.Parser(__doc__)
    p.add_argument("--train-options", action="store_true",
                   help="print the table of keras-preact train's options instead")
    if p.parse_args(argv).train_options:
        from keras_preact.train.config import options_table

        print(options_table())
    else:
        from keras_preact.models.registry import markdown_table

        print(markdown_table())
    return 0

