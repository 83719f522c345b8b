#!/usr/bin/env python
"""Export a trained run, a converted model or an arch to SavedModel, LiteRT and ONNX, verified.

The same as `keras-preact export` (keras_preact/cli/export.py); --help says the options.
"""

import sys

from keras_preact.cli import export

if __name__ == "__main__":
    sys.exit(export.main())
