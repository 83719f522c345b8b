"""Every placement x shortcut x form x stride trains one step and round-trips through .keras."""

import numpy as np
import pytest
import keras

from keras_preact import units as U
from keras_preact.shortcuts import SHORTCUTS
from conftest import to_np


def _all_shortcuts_model(placement, form):
    """One branch per shortcut variant: a stride-1 unit then a stride-2, widening unit."""
    inputs = keras.Input((8, 8, 8))
    branches = []
    for name in SHORTCUTS:
        x = inputs
        for i, (width, stride) in enumerate([(2 if form == "bottleneck" else 8, 1),
                                             (4 if form == "bottleneck" else 16, 2)]):
            x = U.make_unit(placement, width, form=form, strides=stride, shortcut=name,
                            name=f"{name}_s{stride}")(x)
        branches.append(keras.layers.GlobalAveragePooling2D(name=f"{name}_gap")(x))
    x = keras.layers.Concatenate()(branches)
    outputs = keras.layers.Dense(3, name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{placement}_{form}")


@pytest.mark.parametrize("form", ["basic", "bottleneck"])
@pytest.mark.parametrize("placement", list(U.PLACEMENTS))
def test_one_training_step_then_round_trip(tmp_path, rng, placement, form):
    model = _all_shortcuts_model(placement, form)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,  # XLA compilation costs more than the one step it would speed up
    )
    x = rng.normal(size=(8, 8, 8, 8)).astype("float32")
    y = rng.integers(0, 3, size=8)
    before = {w.path: to_np(w) for w in model.trainable_weights}
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    unchanged = [p for p, v in before.items()
                 if np.array_equal(v, to_np(next(w for w in model.trainable_weights if w.path == p)))]
    assert not unchanged, f"weights not updated by the training step: {unchanged}"

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_np(loaded(x, training=False)), to_np(model(x, training=False)))
    for a, b in zip(model.layers, loaded.layers):
        assert a.get_config() == b.get_config()
