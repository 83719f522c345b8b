"""``python -m keras_preact <command> ...``: the same as ``keras-preact <command> ...``."""

import sys

from keras_preact.cli import main

if __name__ == "__main__":
    sys.exit(main())
