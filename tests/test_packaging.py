"""What pip installs: the extras match the parts, the command, and the tests' own footing
(the installed package, not the checkout's folder)."""

import configparser
import importlib.metadata
import json
import os
import pathlib
import re
import sys

import pytest

import keras_preact
from keras_preact.cli import COMMANDS
from keras_preact.vocab import extras

from conftest import ROOT, SCRIPTS, python, without

BIN = os.path.dirname(sys.executable)


def _requirements(text):
    """Distribution names (lower case, - for _) of a setup.cfg requirement list."""
    names = []
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", line).group(0))
    return names


def _extras():
    """``{extra: set of distributions}`` of setup.cfg, self-references expanded."""
    setup = configparser.ConfigParser()
    setup.read(os.path.join(ROOT, "setup.cfg"))
    raw = {k: _requirements(v) for k, v in setup["options.extras_require"].items()}

    def expand(extra):
        out = set()
        for name in raw[extra]:
            base, _, inner = name.partition("[")
            if base == "keras_preact":
                for other in inner.rstrip("]").split(","):
                    out |= expand(other)
            else:
                out.add(base.lower().replace("_", "-"))
        return out

    core = {n.lower().replace("_", "-") for n in _requirements(setup["options"]["install_requires"])}
    return core, {extra: expand(extra) for extra in raw}


def test_setup_cfg_extras_are_the_extras_table():
    """Every optional module's distribution is in the extra that vocab/extras.py names (the
    one its one-line error tells the user to install), the core installs none of them, and
    ``all`` installs every extra."""
    core, declared = _extras()
    assert set(extras.EXTRAS) | {"all", "test"} == set(declared)
    for module, (distribution, extra) in extras.PROVIDERS.items():
        assert distribution in declared[extra], (module, extra)
        assert distribution not in core, module
    assert core == {"keras", "numpy", "h5py"}
    assert declared["all"] == set().union(*(declared[e] for e in extras.EXTRAS))


def test_a_missing_module_is_named_with_its_extra():
    with pytest.raises(extras.MissingExtra) as e:
        extras.require("json", "keras_preact_no_such_module", what="The widget")
    assert str(e.value) == ("The widget needs keras_preact_no_such_module, which is not "
                            "installed here: pip install keras_preact_no_such_module.")
    assert str(extras.missing("sklearn.datasets", "--dataset digits")) == (
        '--dataset digits needs scikit-learn, which is not installed here: pip install '
        '"keras_preact[lab]" (in a checkout: pip install ".[lab]").')
    extras.require("json", what="never raised")


def test_the_tests_run_against_the_installed_package():
    """pip installed keras_preact (CI: not editable, so not the checkout's folder), and
    nothing put the checkout or scripts/ on sys.path."""
    distribution = importlib.metadata.distribution("keras_preact")
    assert distribution.version == keras_preact.__version__
    direct = distribution.read_text("direct_url.json")
    editable = bool(direct and json.loads(direct).get("dir_info", {}).get("editable"))
    here = pathlib.Path(keras_preact.__file__).resolve()
    assert editable or not here.is_relative_to(pathlib.Path(ROOT) / "keras_preact"), (
        f"keras_preact is imported from the checkout ({here}): run the tests with `pytest`, "
        "not `python -m pytest`, which puts the current folder first on sys.path")
    on_path = {pathlib.Path(p or ".").resolve() for p in sys.path}
    assert pathlib.Path(ROOT) not in on_path and pathlib.Path(SCRIPTS) not in on_path


def test_the_command_lists_every_command_and_runs_each_as_its_script():
    """``keras-preact`` is installed beside the interpreter; ``keras-preact <command>`` and
    ``python -m keras_preact <command>`` are ``scripts/<command>.py`` under another name."""
    result = python("-c", "import sys; from keras_preact.cli import main; sys.exit(main())",
                    "--help")
    command = os.path.join(BIN, "keras-preact")
    installed = python(command, "--help")  # (the console script is a Python file)
    assert installed.returncode == result.returncode == 0, installed.stderr[-2000:]
    assert installed.stdout == result.stdout
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(COMMANDS)
    for name, module in (("train", "train"), ("table", "model_table")):
        script = python(os.path.join(SCRIPTS, f"{module}.py"), "--help")
        as_module = python("-m", "keras_preact", name, "--help")
        assert script.returncode == as_module.returncode == 0, as_module.stderr[-2000:]
        assert as_module.stdout.startswith(f"usage: keras-preact {name} ")
        assert script.stdout.startswith(f"usage: {module}.py ")
        # (the usage lines wrap at the program's name; what follows them is the same)
        assert as_module.stdout.split("\n\n", 1)[1] == script.stdout.split("\n\n", 1)[1]
    for argv, said in (([], "usage: keras-preact <command>"),
                       (["trian"], "error: unknown command 'trian'; one of: train, evaluate,")):
        wrong = python("-m", "keras_preact", *argv)
        assert wrong.returncode == 2 and said in wrong.stdout + wrong.stderr


def test_a_missing_backend_is_one_line_naming_its_extra(tmp_path):
    """Keras' default backend, TensorFlow, not installed: the command says which extra
    installs it and which variable picks another backend (no traceback)."""
    env = {**without({"tensorflow"}, tmp_path), "KERAS_BACKEND": "tensorflow"}
    result = python("-m", "keras_preact", "summary", "resnet20", env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr == (
        "error: Keras' backend is tensorflow (KERAS_BACKEND=tensorflow), which is not installed "
        'here: pip install "keras_preact[tensorflow]" (in a checkout: pip install '
        '".[tensorflow]"), or choose an installed one with KERAS_BACKEND=jax|torch.\n')


def test_the_command_s_help_loads_no_backend():
    """``keras-preact --help`` reads every command's summary without importing a backend."""
    result = python("-X", "importtime", "-m", "keras_preact", "--help")
    assert result.returncode == 0 and "commands:" in result.stdout, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(COMMANDS) and "keras_preact.cli.common" in imported
    assert not imported & {"tensorflow", "keras", "jax", "torch", "matplotlib"}, sorted(imported)
