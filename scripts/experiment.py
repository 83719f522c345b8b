#!/usr/bin/env python
"""Run one of the paper's experiments: a named grid of training runs.

The same as `keras-preact experiment` (keras_preact/cli/experiment.py); --help says the options.
"""

import sys

from keras_preact.cli import experiment

if __name__ == "__main__":
    sys.exit(experiment.main())
