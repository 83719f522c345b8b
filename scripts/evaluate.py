#!/usr/bin/env python
"""Top-1 / top-5 accuracy of a model on its data set's test split.

The same as `keras-preact evaluate` (keras_preact/cli/evaluate.py); --help says the options.
"""

import sys

from keras_preact.cli import evaluate

if __name__ == "__main__":
    sys.exit(evaluate.main())
