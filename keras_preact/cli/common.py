"""What the commands share: the help layout, argument types, a quiet TensorFlow, and
one-line errors (exit 2) instead of tracebacks.

Importing this module imports nothing heavy: ``--help`` never loads a backend.
"""

import argparse
import os
import signal
import sys
import tempfile

from keras_preact.io import files
from keras_preact.vocab import extras
from keras_preact.vocab._validation import UserError, installed

# TensorFlow's C++ start-up logging is silenced unless the user asked for a level.
USER_SET_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every option's default (where it has one)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text \
                and action.option_strings and action.nargs != 0:  # a flag says its effect
            text += " (default: %(default)s)"
        return text


# The program name in usage and error lines: the script's file name, or "keras-preact <command>"
# (set by keras_preact.cli.main).
PROG = None


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line that points at --help."""

    def __init__(self, description, **kwargs):
        kwargs.setdefault("prog", PROG)
        super().__init__(description=description, formatter_class=HelpFormatter, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def choices_help(text, choices):
    return f"{text}; one of: {', '.join(map(str, choices))}"


def add_config_options(parser, names=None, help=None):
    """Add ``TrainConfig``'s fields (``names``, or all) to ``parser`` as their declarations
    say (``keras_preact.train.config.option``), in the declared groups; ``help`` replaces
    a field's text where a script means something else by it."""
    from keras_preact.train import config as cfg

    for title in cfg.GROUPS:
        fields = [f for f in cfg.declared(title) if names is None or f.name in names]
        group = parser.add_argument_group(title) if names is None else parser
        for f in fields:
            kwargs = dict(dest=f.name, help=(help or {}).get(f.name) or cfg.option_help(f))
            if f.type is bool:
                kwargs["action"] = "store_false" if f.default else "store_true"
            else:
                kwargs.update(type=f.type if f.type in (int, float) else str,
                              metavar=f.metadata["metavar"], choices=f.metadata["choices"],
                              default=f.default, required=f.name == "model_dir" or None)
            group.add_argument(cfg.flag(f.name),
                               **{k: v for k, v in kwargs.items() if v is not None})


def positive_int(text):
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text, minimum):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
    return value


def check_outputs(paths, overwrite):
    """Refuse, before any work, to write ``paths`` (the files of ``--out``) where a file
    exists (unless ``overwrite``), a folder stands, or no folder can be written."""
    for path in paths:
        files.ensure_directory_possible(os.path.dirname(os.path.abspath(path)),
                                        "the folder of --out")
        if os.path.isdir(path):
            raise UserError(f"{path!r} is a folder: choose another --out.")
    existing = [p for p in paths if os.path.lexists(p)]
    if existing and not overwrite:
        one = len(existing) == 1
        raise UserError(f"{' and '.join(map(repr, existing))} already exist{'s' if one else ''}: "
                        f"pass --overwrite to replace {'it' if one else 'them'}, or choose "
                        "another --out.")


def import_tensorflow():
    """Import TensorFlow (when installed) with its C++ start-up lines out of the way,
    unless the user set ``TF_CPP_MIN_LOG_LEVEL``; what an import that fails printed
    is shown."""
    if USER_SET_TF_LOG_LEVEL or "tensorflow" in sys.modules:
        return
    if not installed("tensorflow"):
        return
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def missing_module(name):
    """The :class:`~keras_preact.vocab.extras.MissingExtra` for an import of ``name`` that
    failed deeper down: Keras' own, where it is Keras' backend."""
    backend = os.environ.get("KERAS_BACKEND")
    top = name.partition(".")[0]
    if top in ("tensorflow", "jax", "torch") and (backend or "tensorflow") == top:
        others = "|".join(b for b in ("tensorflow", "jax", "torch") if b != top)
        return extras.MissingExtra(
            f"Keras' backend is {top} (KERAS_BACKEND{'=' + backend if backend else ' unset'}), "
            f"which is not installed here: {extras.install_hint(top)}, or choose an installed "
            f"one with KERAS_BACKEND={others}.")
    return extras.missing(name, "This command")


def one_line(error):
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return " ".join(str(error).split()) or type(error).__name__


class Terminated(BaseException):
    """SIGTERM, raised like ``KeyboardInterrupt`` for SIGINT, so that the script ends
    through the same path (its locks released, one line said)."""


def _terminate(signum, frame):
    raise Terminated


def run(main, *args, resume=None):
    """Call ``main(*args)``; a failure the user can fix is one line on stderr, exit 2.
    SIGINT and SIGTERM end it with one line too (exit 130 and 143), adding ``resume``:
    what running the command again does."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main(*args)
    except ModuleNotFoundError as e:
        # (one of an extra's modules not installed; a module missing inside an installed
        # package is another failure, and shows as one)
        if not extras.install_hint(e.name or "") or installed(e.name.partition(".")[0]):
            raise
        print(f"error: {one_line(missing_module(e.name))}", file=sys.stderr)
        return 2
    except (UserError, files.RefusedError, ValueError, OSError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as e:
        said, code = ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)
        print(said + (f": {resume}" if resume else ""), file=sys.stderr)
        return code
    return 0
