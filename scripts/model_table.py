#!/usr/bin/env python
"""Print the README's model table, generated from the registry."""

import sys

import _cli
from keras_preact.models.registry import markdown_table


def main(argv=None):
    _cli.Parser(__doc__).parse_args(argv)
    print(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
