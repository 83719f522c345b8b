import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend, running on {BACKEND}")
    for item in items:
        if "tf_only" in item.keywords and BACKEND != "tensorflow":
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()


def to_np(x):
    return keras.ops.convert_to_numpy(x)


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
    return np.random.default_rng(0)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
DIGITS = ["--arch", "resnet20", "--dataset", "digits", "--batch-size", "64", "--epochs", "6",
          "--deterministic", "--verbose", "2"]


def run_script(script, *args, timeout=600):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


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
