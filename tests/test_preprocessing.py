"""The normalization (one helper for pipelines, serving and export) and the serving wrapper."""

import numpy as np
import pytest

import keras
from keras_preact import build_resnet
from keras_preact.preprocessing import normalization_layer, serving_model

from conftest import randomise_bn, to_np

MEAN, STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)


def tiny(classifier_activation=None):
    return build_resnet((1, 1), (4, 8), (1, 2), "basic", "cifar", input_shape=(8, 8, 3),
                        classes=5, classifier_activation=classifier_activation)


def test_normalization_is_the_training_normalization(rng):
    images = rng.integers(0, 256, (4, 6, 6, 3)).astype("uint8")
    expected = (images.astype("float64") - np.array(MEAN)) / np.array(STD)
    layer = normalization_layer(MEAN, STD)
    for x in (images, images.astype("float32"), images[0]):  # a batch, or one image
        np.testing.assert_allclose(to_np(layer(x)), expected[:len(x)] if x.ndim == 4 else
                                   expected[0], rtol=1e-6, atol=1e-5)
    assert layer.compute_output_shape((None, 6, 6, 3)) == (None, 6, 6, 3)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        assert normalization_layer(MEAN, STD).compute_dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_normalization_errors():
    with pytest.raises(ValueError, match="one value per channel"):
        normalization_layer((1.0, 2.0), (1.0,))
    with pytest.raises(ValueError, match="std must be positive"):
        normalization_layer((1.0,), (0.0,))


@pytest.mark.parametrize("input_dtype", ["float32", "uint8"])
def test_serving_model_equals_the_network_on_normalized_inputs(tmp_path, rng, input_dtype):
    net = tiny()
    randomise_bn(net, rng)
    serving = serving_model(net, (MEAN, STD), input_dtype=input_dtype)
    assert [t.name for t in serving.inputs] == ["images"]
    assert serving.inputs[0].dtype == input_dtype
    images = rng.integers(0, 256, (6, 8, 8, 3)).astype(input_dtype)
    out = serving(images, training=False)
    assert sorted(out) == ["logits", "probabilities"]
    normalized = (images.astype("float32") - np.float32(MEAN)) / np.float32(STD)
    direct = to_np(net(normalized, training=False))
    np.testing.assert_allclose(to_np(out["logits"]), direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_np(out["probabilities"]), to_np(keras.ops.softmax(direct)),
                               rtol=1e-5, atol=1e-6)
    # The wrapper is plain registered Keras: it round-trips with safe_mode=True.
    path = str(tmp_path / "serving.keras")
    serving.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(to_np(loaded(images, training=False)["logits"]), direct,
                               rtol=1e-5, atol=1e-5)


def test_serving_model_options():
    net = tiny()
    logits_only = serving_model(net, None, softmax=False)
    assert list(logits_only.output) == ["logits"]
    with pytest.raises(ValueError, match="uint8.*needs the preprocessing"):
        serving_model(net, None, input_dtype="uint8")
    with pytest.raises(ValueError, match="Unknown input_dtype 'int8'. Valid choices: 'float32', 'uint8'"):
        serving_model(net, (MEAN, STD), input_dtype="int8")
