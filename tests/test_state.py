"""A training state keyed by the unrolled names (``keras_preact.train.state``): a run's
resume state moves between the scanned and the unrolled form, momentum and step included."""

import numpy as np
import pytest
import keras

import os

import keras_preact as kp
from keras_preact.io import files
from keras_preact.train import config as cfg
from keras_preact.train import rundir, state, training
from keras_preact.layers.scanned import unrolled_weights


def _trained(scan, rng, steps=2):
    """A small ResNet-20 (scanned or not) after ``steps`` SGD steps with momentum."""
    keras.utils.set_random_seed(0)
    model = kp.PreActResNet20(input_shape=(16, 16, 3), classes=3, classifier_activation=None,
                              scan_units=scan)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    if steps:
        x = rng.normal(size=(4 * steps, 16, 16, 3)).astype("float32")
        model.fit(x, rng.integers(0, 3, 4 * steps), batch_size=4, epochs=1, verbose=0,
                  shuffle=False)
    return model


def _step(model, x, y):
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    return state.dump(model)


# (Backend-generic, and CI's TensorFlow pass is its longest: the two form-changing tests run
# in the JAX pass; the TensorFlow pass's resume tests write and read this state in one form.)
other_pass = pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                                reason="runs in CI's JAX pass")


@other_pass
def test_a_scanned_state_resumes_unrolled_and_back(rng):
    scanned = _trained(True, rng)
    saved = state.dump(scanned)
    assert saved["optimizer/iteration"] == 2
    # (every weight and every trainable weight's momentum, by its unrolled name)
    assert "weights/stage1_unit3/conv1/kernel" in saved
    assert "momentum/stage1_unit3/conv1/kernel" in saved
    assert "momentum/stage1_unit3/bn1/moving_mean" not in saved
    momentum = saved["momentum/stage1_unit3/conv1/kernel"]
    assert np.abs(momentum).max() > 0  # (two steps: a momentum to carry)

    unrolled = _trained(False, rng, steps=0)
    state.load(unrolled, saved)
    moved = state.dump(unrolled)
    assert moved.keys() == saved.keys()
    for key in saved:
        np.testing.assert_array_equal(moved[key], saved[key], err_msg=key)
    back = _trained(True, rng, steps=0)
    state.load(back, moved)
    for key, value in state.dump(back).items():
        np.testing.assert_array_equal(value, saved[key], err_msg=key)

    # The next step is the same step in either form: the momentum came along. (Without it
    # the step differs by 0.9 * momentum * lr.)
    x = rng.normal(size=(4, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, 4)
    after_scanned, after_unrolled = _step(scanned, x, y), _step(unrolled, x, y)
    key = "weights/stage1_unit3/conv1/kernel"
    moved_by = np.abs(after_scanned[key] - saved[key]).max()
    np.testing.assert_allclose(after_unrolled[key], after_scanned[key], rtol=0,
                               atol=1e-4 * moved_by)
    assert after_unrolled["optimizer/iteration"] == 3


def test_a_state_of_another_network_is_refused(rng):
    saved = state.dump(_trained(True, rng, steps=0))
    other = kp.PreActResNet32(input_shape=(16, 16, 3), classes=3, scan_units=True)
    other.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    other.optimizer.build(other.trainable_variables)
    with pytest.raises(ValueError, match=r"missing \(e\.g\. .*stage1_unit4"):
        state.load(other, saved)


@other_pass
def test_last_keras_of_the_other_form_resumes_its_weights(tmp_path, rng):
    """No intact backup, and last.keras saved scanned: an unrolled run takes its weights by
    name (the momentum starts at zero), saying so."""
    run_dir = tmp_path / "run"
    config = cfg.resolve_config(cfg.TrainConfig(model_dir=str(run_dir), arch="resnet20",
                                                dataset="digits"))
    scanned = _trained(True, rng)
    os.makedirs(run_dir)
    scanned.save(str(run_dir / "last.keras"))
    files.write_json(str(run_dir / "checkpoints.json"), {"last": {"epoch": 3}})
    unrolled, messages = _trained(False, rng, steps=0), []
    epoch, _, _ = training._restore(unrolled, config, rundir.Action.RESUME, True, None,
                                    messages.append, steps_per_epoch=5)
    assert epoch == 3 and "saved in the other form" in messages[-1], messages
    assert int(keras.ops.convert_to_numpy(unrolled.optimizer.iterations)) == 15
    theirs = unrolled_weights(scanned)
    for path, value in unrolled_weights(unrolled).items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(value),
                                      keras.ops.convert_to_numpy(theirs[path]), err_msg=path)


def test_a_loss_scale_optimizer_keeps_both_of_its_step_counts(rng):
    """Mixed float16 wraps the optimizer in a LossScaleOptimizer, which has an ``iteration``
    of its own beside its inner optimizer's: both are kept, apart."""
    def compiled():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")],
                                 name="tiny")
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.1, momentum=0.9)),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.optimizer.build(model.trainable_variables)
        return model

    model = compiled()
    model.fit(rng.normal(size=(8, 4)).astype("float32"), rng.integers(0, 3, 8), batch_size=4,
              epochs=1, verbose=0)
    saved = state.dump(model)
    assert {"optimizer/iteration", "optimizer/iteration#2"} <= saved.keys()
    assert np.abs(saved["momentum/tiny/dense/kernel"]).max() > 0
    fresh = compiled()
    state.load(fresh, saved)
    for key, value in state.dump(fresh).items():
        np.testing.assert_array_equal(value, saved[key], err_msg=key)
