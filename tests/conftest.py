import os

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
