#!/usr/bin/env python
"""Plot training loss and test error against iterations for one or more runs (paper Fig. 1/6).

The same as `keras-preact plot` (keras_preact/cli/plot.py); --help says the options.
"""

import sys

from keras_preact.cli import plot

if __name__ == "__main__":
    sys.exit(plot.main())
