"""The Keras internals keras_preact reads (``keras_preact.compat``) are still there.

Each test makes this Keras produce the real error and checks that compat recognises it: a
Keras that changes its words fails here, not in a user's one-line message.
"""

import warnings

import numpy as np
import pytest
import keras

from keras_preact import compat


def _load(model, path):
    with warnings.catch_warnings():  # Keras' aside on a mismatch, as models.load_weights
        warnings.filterwarnings("ignore", message="Skipping nested container")
        model.load_weights(path)


def _small(classes, bias=True):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, use_bias=bias, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, name="out")(hidden))


def test_a_file_that_carries_code_is_recognised(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = str(tmp_path / "lambda.keras")
    model.save(path)
    with pytest.raises(ValueError) as caught:
        keras.saving.load_model(path, safe_mode=True)
    assert compat.refuses_unsafe_code(caught.value)
    assert not compat.refuses_unsafe_code(ValueError("File not found: x.keras"))


def test_a_weights_file_of_other_shapes_is_read(tmp_path):
    path = str(tmp_path / "ten.weights.h5")
    _small(10).save_weights(path)
    with pytest.raises(ValueError) as caught:
        _load(_small(7), path)
    detail = compat.weights_mismatch(caught.value)
    assert detail is not None and "out" in detail and "(3, 10) in the file" in detail \
        and "(3, 7) in the model" in detail, str(caught.value)


def test_a_weights_file_of_other_layers_is_read(tmp_path):
    path = str(tmp_path / "biased.weights.h5")
    _small(5).save_weights(path)
    with pytest.raises(ValueError) as caught:
        _load(_small(5, bias=False), path)
    detail = compat.weights_mismatch(caught.value)
    assert detail is not None, str(caught.value)
    assert detail.startswith(("the first mismatch is", "1 layers could not be loaded")), detail
    assert compat.weights_mismatch(ValueError("something else")) is None


def test_keras_tree_is_public():
    """compat's multi-worker fix maps structures with the public ``keras.tree``."""
    assert keras.tree.map_structure(lambda v: v * 2, {"a": np.ones(2)})["a"].tolist() == [2, 2]


@pytest.mark.parametrize("optimizer, slots", [
    (lambda: keras.optimizers.SGD(0.1, momentum=0.9), {"momentum": "momentums"}),
    (lambda: keras.optimizers.Adam(), {"momentum": "_momentums", "velocity": "_velocities"}),
])
def test_each_optimizer_variable_is_found_by_its_model_variable(optimizer, slots):
    """Keras' own map (``_get_variable_index`` into each slot list) is the truth the names
    are checked against; a Keras that names its slots otherwise fails here."""
    model = _small(2)
    opt = optimizer()
    opt.build(model.trainable_variables)
    found, others = compat.optimizer_slots(opt, model.trainable_variables)
    assert sorted(found) == sorted(v.path for v in model.trainable_variables)
    for variable in model.trainable_variables:
        index = opt._get_variable_index(variable)
        assert {s: id(v) for s, v in found[variable.path].items()} == {
            s: id(getattr(opt, attribute)[index]) for s, attribute in slots.items()}
    assert opt.iterations in others and len(others) + sum(map(len, found.values())) == len(
        opt.variables)
