#!/usr/bin/env python
"""Print the README's model table, generated from the registry."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_preact.registry import markdown_table  # noqa: E402

if __name__ == "__main__":
    print(markdown_table())
