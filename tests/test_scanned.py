"""Scanned stages (``scan_units=True``): the same network as the unrolled one.

Each case builds a network both ways with the same weights and random BN statistics. In
float64 the two forms must compute the same function to 1e-10 of the values' scale: the
outputs, the loss, every gradient of the loss (cross-entropy plus the L2 regulariser) and the
BN statistics after one training step; a check that one unit's gate bias moved by 1e-6 fails.
In float32 the well-conditioned values must agree to 1e-5: the outputs and the statistics a
training pass leaves. (Not the float32 gradients: XLA compiles the loop and the chain into
different roundings, and a difference of 1e-7 at a ReLU's kink flips the activation, which
moved single gradients by up to 1e-2 on some CPUs and seeds.) Then the dtype, the
conversions, the ``.keras`` round trip and cross-form loading.
"""

import numpy as np
import pytest
import keras

import keras_preact
from keras_preact import convert
from keras_preact.config import XLA_SCAN_MIN_UNITS, TrainConfig, resolve_config, scan_choice
from keras_preact.scanned import ScannedUnits, assign_unrolled, unrolled_weights
from conftest import BACKEND, randomise_bn, to_np

SHAPE = (16, 16, 3)
GATING = dict(placement="original", shortcut={"name": "exclusive_gating", "gate_bias": -2.0})


def _pair(rng, remat=False, **options):
    """(unrolled, scanned) PreActResNet-20s with the same random weights and statistics."""
    unrolled = keras_preact.PreActResNet20(
        input_shape=SHAPE, classifier_activation=None,
        kernel_regularizer=keras.regularizers.L2(5e-5), **options)
    for w in unrolled.trainable_weights:  # biases (the gates') away from their init
        if "bias" in w.path:
            w.assign(rng.normal(0, 0.5, w.shape))
    randomise_bn(unrolled, rng)
    scanned = convert.scan(unrolled, remat=remat)
    assert [type(layer).__name__ for layer in scanned.layers].count("ScannedUnits") == 3
    return unrolled, scanned


def _batch(rng):
    return rng.normal(0, 1, (4, *SHAPE)).astype(keras.config.floatx()), np.array([0, 3, 7, 9])


# (tolerance, least scale): float32 rounds at 1e-7 of 1; float64 computes the same function.
TOLERANCE = {"float32": (1e-5, 1.0), "float64": (1e-10, 0.0)}


def _close(a, b, floor=None):
    """Within the floatx's tolerance of ``b``'s scale (or of ``floor``, if larger)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype == keras.config.floatx()
    tol, least = TOLERANCE[keras.config.floatx()]
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * max(np.abs(b).max(), floor or least))


def _train_step(model, x, y):
    """(loss, {unrolled path: gradient}) of one training step; updates the BN statistics."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    paths = _paths(model)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True)) + keras.ops.sum(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
    elif BACKEND == "torch":
        import torch

        loss = loss_fn(y, model(x, training=True)) + keras.ops.sum(model.losses)
        grads = torch.autograd.grad(loss, [v.value for v in model.trainable_variables])
    else:
        import jax

        trainable = [v.value for v in model.trainable_variables]
        state = [v.value for v in model.non_trainable_variables]

        def f(trainable):
            out, new, losses = model.stateless_call(trainable, state, x, training=True,
                                                    return_losses=True)
            return loss_fn(y, out) + sum(losses), new

        (loss, new), grads = jax.value_and_grad(f, has_aux=True)(trainable)
        for v, value in zip(model.non_trainable_variables, new):
            v.assign(value)
    return to_np(loss), _by_unit(paths, grads)


def _paths(model):
    """For each trainable variable, the unrolled paths it holds (one, or one per unit)."""
    out = []
    for v in model.trainable_variables:
        layer = next((layer for layer in model.layers if isinstance(layer, ScannedUnits)
                      and any(s is v for _, s in layer.slots)), None)
        if layer is None:
            out.append([v.path])
        else:
            slot = next(p for p, s in layer.slots if s is v)
            out.append([f"{name}/{slot}" for name in layer.unit_names])
    return out


def _by_unit(paths, grads):
    out = {}
    for names, g in zip(paths, grads):
        g = to_np(g)
        out.update({names[0]: g} if len(names) == 1 else dict(zip(names, g)))
    return out


CASES = [dict(placement=p) for p in keras_preact.PLACEMENTS] + [
    dict(shortcut={"name": "constant_scaling", "scale": 0.5, "scale_residual": True}),
    GATING,
    dict(shortcut={"name": "shortcut_only_gating", "gate_bias": 0.0}),
    dict(shortcut="conv1x1", projection="A"),
    dict(placement="relu_only_preact", remat=True),
]
IDS = ["-".join(str(v if not isinstance(v, dict) else v["name"]) for v in o.values())
       for o in CASES]


def _assert_same_step(unrolled, scanned, x, y):
    """The forms' outputs, loss, gradients and BN statistics after one training step."""
    _close(to_np(scanned(x)), to_np(unrolled(x)))
    before = {p: to_np(v) for p, v in unrolled_weights(unrolled).items()}
    loss_u, grads_u = _train_step(unrolled, x, y)
    loss_s, grads_s = _train_step(scanned, x, y)
    _close(loss_s, loss_u)
    assert grads_s.keys() == grads_u.keys() and len(grads_u) == len(unrolled.trainable_weights)
    # Each gradient to its own scale, taken as at least a thousandth of the largest gradient:
    # one that is zero in exact arithmetic (the beta of a BN feeding the head's training-mode
    # BN) is rounding noise. (The smallest non-zero ones measured 3e-3 of the largest.)
    floor = 1e-3 * max(np.abs(g).max() for g in grads_u.values())
    for path in grads_u:
        _close(grads_s[path], grads_u[path], floor)
    _assert_same_statistics(unrolled, scanned, before)


def _assert_same_statistics(unrolled, scanned, before):
    after_u = {p: to_np(v) for p, v in unrolled_weights(unrolled).items()}
    after_s = {p: to_np(v) for p, v in unrolled_weights(scanned).items()}
    moved = [p for p in after_u if "moving" in p and not np.allclose(after_u[p], before[p])]
    assert len(moved) == len([p for p in after_u if "moving" in p])  # every BN updated once
    for path in after_u:
        _close(after_s[path], after_u[path])


@pytest.mark.parametrize("options", CASES, ids=IDS)
def test_scanned_computes_the_unrolled_function(rng, float64, options):
    unrolled, scanned = _pair(rng, **options)
    _assert_same_step(unrolled, scanned, *_batch(rng))


@pytest.mark.parametrize("options", CASES, ids=IDS)
def test_scanned_outputs_equal_unrolled_in_float32(rng, options):
    unrolled, scanned = _pair(rng, **options)
    x, _ = _batch(rng)
    _close(to_np(scanned(x)), to_np(unrolled(x)))
    before = {p: to_np(v) for p, v in unrolled_weights(unrolled).items()}
    _close(to_np(scanned(x, training=True)), to_np(unrolled(x, training=True)))
    _assert_same_statistics(unrolled, scanned, before)


def test_the_comparison_sees_one_gate_bias_differ(rng, float64):
    """The float64 check is no looser than it must be: a 1e-6 change to one unit fails it."""
    unrolled, scanned = _pair(rng, **GATING)
    weights = unrolled_weights(scanned)
    path = "stage2_unit3/shortcut/gate/bias"
    assign_unrolled(scanned, {**weights, path: to_np(weights[path]) + 1e-6})
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        _assert_same_step(unrolled, scanned, *_batch(rng))


def test_scan_and_unroll_keep_a_float64_network_bit_for_bit(rng, float64):
    unrolled = keras_preact.PreActResNet20(input_shape=SHAPE, **GATING)
    for w in unrolled.weights:
        w.assign(rng.normal(0, 1, w.shape) ** (2 if "variance" in w.path else 1))
    keras.config.set_floatx("float32")  # the forms keep the network's dtype, not floatx's
    scanned = convert.scan(unrolled)
    again = convert.unroll(scanned)
    expected = {p: to_np(v) for p, v in unrolled_weights(unrolled).items()}
    for model in (scanned, again):
        assert model.inputs[0].dtype == "float64"
        assert {layer.dtype_policy.name for layer in model.layers} == {"float64"}
        got = {p: to_np(v) for p, v in unrolled_weights(model).items()}
        assert got.keys() == expected.keys()
        for path, value in got.items():
            assert value.dtype == "float64" and np.array_equal(value, expected[path]), path


def test_dropout_shortcut_scanned(rng):
    """Dropout draws a different mask per unit and per step; inference is exact."""
    unrolled, scanned = _pair(rng, shortcut={"name": "dropout", "rate": 0.5})
    x = rng.normal(0, 1, (2, *SHAPE)).astype("float32")
    _close(to_np(scanned(x)), to_np(unrolled(x)))
    first, second = to_np(scanned(x, training=True)), to_np(scanned(x, training=True))
    assert not np.allclose(first, second)


def test_builder_scans_each_run_of_identical_units():
    model = keras_preact.PreActResNet164(scan_units=True)
    assert [layer.name for layer in model.layers if "unit" in layer.name] == [
        "stage1_unit1", "stage1_units2to18", "stage2_unit1", "stage2_units2to18",
        "stage3_unit1", "stage3_units2to18"]
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 1_703_258  # paper 1.7M
    assert model.count_params() == keras_preact.PreActResNet164().count_params()
    assert model.get_layer("stage2_units2to18").unit_names[-1] == "stage2_unit18"
    # keras.applications' layout: the last unit of stages 1-3 carries the stride.
    model = keras_preact.PreActResNet50(layout="keras_applications", scan_units=True,
                                        weights=None, input_shape=(64, 64, 3))
    assert [layer.name for layer in model.layers if "unit" in layer.name][:4] == [
        "stage1_unit1", "stage1_unit2", "stage1_unit3", "stage2_unit1"]
    assert "stage3_units2to5" in [layer.name for layer in model.layers]


def test_unroll_scan_round_trip_and_keras_file(tmp_path, rng):
    unrolled, scanned = _pair(rng, placement="original")
    again = convert.unroll(scanned)
    assert [layer.name for layer in again.layers] == [layer.name for layer in unrolled.layers]
    x = rng.normal(0, 1, (2, *SHAPE)).astype("float32")
    _close(to_np(again(x)), to_np(unrolled(x)))
    path = str(tmp_path / "scanned.keras")
    scanned.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert isinstance(loaded.get_layer("stage1_units1to3"), ScannedUnits)  # 16 in, 16 out
    _close(to_np(loaded(x)), to_np(unrolled(x)))
    # Checkpoints load across forms: a scanned file into an unrolled model and back.
    fresh = keras_preact.PreActResNet20(input_shape=SHAPE, classifier_activation=None,
                                        placement="original", weights=path)
    _close(to_np(fresh(x)), to_np(unrolled(x)))
    unrolled.save(str(tmp_path / "unrolled.keras"))
    fresh = keras_preact.PreActResNet20(input_shape=SHAPE, classifier_activation=None,
                                        placement="original", scan_units=True,
                                        weights=str(tmp_path / "unrolled.keras"))
    _close(to_np(fresh(x)), to_np(unrolled(x)))
    with pytest.raises(ValueError, match="do not fit"):
        keras_preact.PreActResNet32(input_shape=SHAPE, scan_units=True, weights=path)


def test_scan_refuses_what_it_cannot_rebuild():
    """Scan and unroll rebuild from the network's configuration: a hand-wired model of
    units (no configuration) is refused in one line, as is a non-functional one."""
    inputs = keras.Input((8, 8, 16))
    a = keras_preact.units.FullPreActUnit(16, name="b_unit1")(inputs)
    b = keras_preact.units.FullPreActUnit(16, name="b_unit2")(a)
    model = keras.Model(inputs, [b, a])
    for wrong in (model, keras.Sequential([keras.layers.Dense(2)])):
        with pytest.raises(ValueError, match="not a keras_preact.PreActResNet"):
            convert.scan(wrong)


def test_remat_needs_scan():
    with pytest.raises(ValueError, match="scan_units=True"):
        keras_preact.PreActResNet20(remat=True)
    with pytest.raises(ValueError, match="--scan-units on or auto"):
        resolve_config(TrainConfig(model_dir="x", arch="resnet20", dataset="digits",
                                   remat=True, scan_units="off"))


def test_scan_choice_by_compiler_and_record():
    small = resolve_config(TrainConfig(model_dir="x", arch="resnet164"))
    deep = resolve_config(TrainConfig(model_dir="x", arch="resnet1001"))
    assert scan_choice(small, xla=False) and not scan_choice(small, xla=True)
    assert not scan_choice(small, xla=False, eager=True) and not scan_choice(deep, False, eager=True)
    assert sum(keras_preact.model_info("resnet1001")["stage_units"]) >= XLA_SCAN_MIN_UNITS
    assert scan_choice(deep, xla=True)
    assert not scan_choice(small, xla=False, recorded="off")  # a 0.1 run keeps its form
    assert scan_choice(resolve_config(TrainConfig(model_dir="x", arch="resnet164",
                                                  remat=True)), xla=True)


def test_mixed_bfloat16(rng):
    """Each sublayer casts its own slice as it casts its own variable when unrolled: the
    stacks stay float32, the BN statistics too, and one training step runs."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        unrolled = keras_preact.PreActResNet20(input_shape=SHAPE, classifier_activation=None)
        randomise_bn(unrolled, rng)
        scanned = convert.scan(unrolled)
        stacks = scanned.get_layer("stage2_units2to3").slots
        assert {v.dtype for _, v in stacks} == {"float32"}
        x = rng.normal(0, 1, (4, *SHAPE)).astype("float32")
        a, b = (to_np(m(x)).astype("float32") for m in (unrolled, scanned))
        np.testing.assert_allclose(b, a, rtol=0, atol=0.02 * np.abs(a).max())  # bf16: 8 bits
        scanned.compile(optimizer="sgd",
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        assert np.isfinite(scanned.train_on_batch(x, np.array([0, 1, 2, 3])))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.tf_only
def test_export_takes_the_unrolled_network(tmp_path, rng):
    from keras_preact import export

    unrolled, scanned = _pair(rng)
    path = str(tmp_path / "scanned.keras")
    scanned.save(path)
    source = export.load_source(model=path, normalization=((0.0,) * 3, (1.0,) * 3))
    assert not any(isinstance(layer, ScannedUnits) for layer in source.model.layers)
    assert [layer.name for layer in source.model.layers] == [l.name for l in unrolled.layers]
    x = rng.normal(0, 1, (2, *SHAPE)).astype("float32")
    _close(to_np(source.model(x)), to_np(unrolled(x)))
