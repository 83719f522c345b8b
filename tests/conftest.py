import importlib
import io
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

BACKEND = keras.backend.backend()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
# KERAS_PREACT_TEST_SEED=N reseeds every test (Keras' seed and the ``rng`` fixture's) to sweep
# for seed-fragile tests; unset, Keras' seed is 1234 and the fixture's 0.
_SEED = os.environ.get("KERAS_PREACT_TEST_SEED")
KERAS_SEED = 1234 if _SEED is None else int(_SEED)
NUMPY_SEED = 0 if _SEED is None else int(_SEED)
DIGITS = ["--arch", "resnet20", "--dataset", "digits", "--batch-size", "64", "--epochs", "6",
          "--deterministic", "--verbose", "2"]


def pytest_addoption(parser):
    parser.addoption("--run-large", action="store_true", default=False,
                     help="also build the full-depth networks (ResNet-101 ... 1202); CI does")


def pytest_collection_modifyitems(config, items):
    skip_tf = pytest.mark.skip(reason=f"needs the TensorFlow backend, running on {BACKEND}")
    skip_large = pytest.mark.skip(reason="builds a full-depth network: pass --run-large")
    for item in items:
        if "tf_only" in item.keywords and BACKEND != "tensorflow":
            item.add_marker(skip_tf)
        if "slow" in item.keywords and not config.getoption("--run-large"):
            item.add_marker(skip_large)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(KERAS_SEED)
    yield
    keras.backend.clear_session()


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def gradient(fn, x):
    """The gradient of the scalar ``fn(x)`` with respect to the array ``x``, on any backend."""
    if BACKEND == "jax":
        import jax

        return jax.grad(fn)(keras.ops.convert_to_tensor(x))
    if BACKEND == "torch":
        import torch

        v = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(v), [v])
        return grad
    import tensorflow as tf

    v = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(v)
        value = fn(v)
    return tape.gradient(value, v)


def randomise_bn(layer_or_model, rng):
    """Give every BatchNormalization non-trivial statistics and affine terms."""
    layers = (
        layer_or_model._flatten_layers(include_self=True, recursive=True)
        if hasattr(layer_or_model, "_flatten_layers")
        else [layer_or_model]
    )
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))


@pytest.fixture
def rng():
    return np.random.default_rng(NUMPY_SEED)


@pytest.fixture
def float64(monkeypatch):
    """Build and compute in float64 for the test (floatx, and JAX's 64-bit types).

    On JAX, Keras caps its type promotion at 32 bits (``result_type`` maps float64 to
    float32, keras/src/backend/common/dtypes.py), so BatchNormalization computes a float64
    network's statistics in float32: two forms of a ResNet-20 then differ by 5e-8 (outputs) to
    2e-6 (gradients) of their scale instead of 1e-14. The cap is lifted for the test; nothing public lifts it.
    """
    import contextlib

    keras.config.set_floatx("float64")
    with contextlib.ExitStack() as stack:
        if BACKEND == "jax":
            import jax
            from keras.src.backend.common import dtypes

            stack.enter_context(jax.enable_x64(True))
            monkeypatch.setitem(dtypes.BIT64_TO_BIT32_DTYPE, "float64", "float64")
        try:
            yield
        finally:
            keras.config.set_floatx("float32")


def python(*argv, env=None, prefix=(), wait=True, timeout=600, **kwargs):
    """The one subprocess helper: run ``python *argv`` (``prefix`` runs it, e.g. setpriv)
    to completion and return the ``CompletedProcess``, or with ``wait=False`` start it and
    return the ``Popen``. TensorFlow's C++ logging is quiet, and nothing puts the current
    folder (the checkout) or a script's folder on ``sys.path``: the installed package runs."""
    command = [*prefix, sys.executable, *argv]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONSAFEPATH="1", **(env or {}))
    if not wait:
        return subprocess.Popen(command, env=env, text=True, **kwargs)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                          **kwargs)


# Modules hidden from every finder in each interpreter by sitecustomize, so that they look
# as if they were not installed: importlib.util.find_spec says None (torch's dynamo asks it
# about scikit-learn and takes an exception for a failure), an import raises
# ModuleNotFoundError, and they are not in sys.modules (where Keras takes a name for a module).
NOT_INSTALLED = """
import sys


class Hidden:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self.finder, name)


sys.meta_path[:] = [Hidden(finder) for finder in sys.meta_path]
"""


def without(modules, tmp_path):
    """The environment of a Python that cannot import ``modules`` (top-level names), as
    on a machine where they are not installed; pass it to :func:`python`."""
    site = tmp_path / "without"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NOT_INSTALLED.format(blocked=set(modules)))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def run_script(script, *args, **kwargs):
    """``scripts/<script> *args`` in a fresh interpreter (see :func:`python`)."""
    return python(os.path.join(SCRIPTS, script), *args, **kwargs)


def script_module(name):
    """The command behind ``scripts/<name>.py`` (``keras_preact.cli.<name>``), to call its
    ``main(argv)`` in this process."""
    return importlib.import_module(f"keras_preact.cli.{name}")


def call_script(name, argv, capsys):
    """``(exit code, stdout, stderr)`` of ``scripts/<name>.py argv`` run in this process."""
    try:
        code = script_module(name).main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """An uninterrupted, deterministic digits run through scripts/train.py (TensorFlow),
    shared by the training and export tests."""
    if BACKEND != "tensorflow":
        pytest.skip("the reference run trains on TensorFlow")
    run_dir = str(tmp_path_factory.mktemp("ref") / "run")
    result = run_script("train.py", *DIGITS, "--model-dir", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def write_cifar_archive(path, n_train=40, n_test=12, classes=10, payload=None):
    """A CIFAR-10/100 python archive in the official layout; each image is filled
    with 20 * label so a label can be read back from any pixel. ``payload`` is
    pickled into the first batch (a crafted archive)."""
    rng = np.random.default_rng(0)
    hundred = classes == 100
    root = "cifar-100-python" if hundred else "cifar-10-batches-py"
    key = b"fine_labels" if hundred else b"labels"

    def batch(n):
        labels = rng.integers(0, min(classes, 12), n)
        images = np.repeat((labels * 20).astype("uint8")[:, None], 3072, axis=1)
        return {key: labels.tolist(), b"data": images}

    files = ({f"{root}/train": batch(n_train), f"{root}/test": batch(n_test)} if hundred else
             {**{f"{root}/data_batch_{i}": batch(n_train // 5) for i in range(1, 6)},
              f"{root}/test_batch": batch(n_test)})
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            if payload is not None:
                content, payload = {**content, b"extra": payload}, None
            raw = pickle.dumps(content)
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path
