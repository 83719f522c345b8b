#!/usr/bin/env python
"""Measure signal propagation unit by unit (the paper's Eq. 4, 5 and 8, Sec. 4.2).

The same as `keras-preact analyze` (keras_preact/cli/analyze.py); --help says the options.
"""

import sys

from keras_preact.cli import analyze

if __name__ == "__main__":
    sys.exit(analyze.main())
