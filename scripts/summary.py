#!/usr/bin/env python
"""Build a model from the registry and print its summary and metadata.

The same as `keras-preact summary` (keras_preact/cli/summary.py); --help says the options.
"""

import sys

from keras_preact.cli import summary

if __name__ == "__main__":
    sys.exit(summary.main())
