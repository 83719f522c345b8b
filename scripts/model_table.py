#!/usr/bin/env python
"""Print the README's tables: the models (from the registry) or the training options.

The same as `keras-preact table` (keras_preact/cli/model_table.py); --help says the options.
"""

import sys

from keras_preact.cli import model_table

if __name__ == "__main__":
    sys.exit(model_table.main())
