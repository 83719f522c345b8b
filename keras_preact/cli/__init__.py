"""The command line: ``keras-preact <command> ...`` (and ``python -m keras_preact``).

Each command is a module here with ``main(argv)``; ``scripts/<command>.py`` call the same
functions. Importing a command imports nothing heavy, so every ``--help`` is fast.
"""

import importlib
import sys

# command -> module of keras_preact.cli (the order of keras-preact --help)
COMMANDS = {
    "train": "train",
    "evaluate": "evaluate",
    "export": "export",
    "experiment": "experiment",
    "analyze": "analyze",
    "benchmark": "benchmark",
    "summary": "summary",
    "plot": "plot",
    "table": "model_table",
}


def command(name):
    """The module of command ``name``."""
    return importlib.import_module(f"{__name__}.{COMMANDS[name]}")


def usage():
    from keras_preact.vocab.catalog import VERSION

    width = max(map(len, COMMANDS))
    lines = [f"usage: keras-preact <command> [options]   (keras_preact {VERSION})", "",
             "Pre-activation ResNets (He et al., ECCV 2016) for Keras 3.", "", "commands:"]
    for name in COMMANDS:
        summary = (command(name).__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<{width}}  {summary}")
    lines += ["", "keras-preact <command> --help says what each command takes."]
    return "\n".join(lines)


def main(argv=None):
    """``keras-preact <command> [options]``: the exit code of the command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from keras_preact.vocab.catalog import VERSION

        print(f"keras_preact {VERSION}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; one of: {', '.join(COMMANDS)} "
              "(see keras-preact --help)", file=sys.stderr)
        return 2
    from keras_preact.cli import common

    common.PROG = f"keras-preact {argv[0]}"
    try:
        return command(argv[0]).main(argv[1:])
    finally:
        common.PROG = None
