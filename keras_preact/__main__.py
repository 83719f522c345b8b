"""``python -m keras_preact <command> ...``: the same as ``keras-preact <command> ...``."""

import sys

from keras_preact.cli import main

sys.exit(main())
