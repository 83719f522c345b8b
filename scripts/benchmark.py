#!/usr/bin/env python
"""Benchmarks that print figures (nothing is asserted).

The same as `keras-preact benchmark` (keras_preact/cli/benchmark.py); --help says the options.
"""

import sys

from keras_preact.cli import benchmark

if __name__ == "__main__":
    sys.exit(benchmark.main())
