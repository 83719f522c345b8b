#!/usr/bin/env python
"""Train a pre-activation ResNet with the paper's recipe (resumable).

The same as `keras-preact train` (keras_preact/cli/train.py); --help says the options.
"""

import sys

from keras_preact.cli import train

if __name__ == "__main__":
    sys.exit(train.main())
