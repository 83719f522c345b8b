"""Residual units (paper Fig. 4, Table 2): structure, identities from the paper, configs."""

import itertools

import numpy as np
import pytest
import keras

from keras_preact import units as U
from keras_preact.shortcuts import SHORTCUTS
from conftest import BACKEND, randomise_bn, to_np

PLACEMENTS = list(U.PLACEMENTS)


def _zero_last(unit):
    """Zero the last BN gamma of F, or its last conv kernel where F ends in a conv."""
    last = unit.branch[-1]
    if isinstance(last, keras.layers.ReLU):
        last = unit.branch[-2]
    zeroed = [last.gamma, last.beta] if isinstance(last, keras.layers.BatchNormalization) else [last.kernel]
    for var in zeroed:  # beta is zero at initialisation; randomise_bn moved it
        var.assign(np.zeros(var.shape, "float32"))


def _layer_kinds(unit):
    names = {keras.layers.Conv2D: "conv", keras.layers.BatchNormalization: "BN", keras.layers.ReLU: "ReLU"}
    return [names[type(layer)] for layer in unit.branch]


@pytest.mark.parametrize(
    "placement, pre, branch, post",
    [
        ("original", [], ["conv", "BN", "ReLU", "conv", "BN"], ["ReLU"]),
        ("bn_after_addition", [], ["conv", "BN", "ReLU", "conv"], ["BN", "ReLU"]),
        ("relu_before_addition", [], ["conv", "BN", "ReLU", "conv", "BN", "ReLU"], []),
        ("relu_only_preact", ["ReLU"], ["conv", "BN", "ReLU", "conv", "BN"], []),
        ("full_preact", ["BN", "ReLU"], ["conv", "BN", "ReLU", "conv"], []),
    ],
)
def test_placement_layouts_follow_fig4(placement, pre, branch, post):
    unit = U.make_unit(placement, 8)
    unit.build((None, 8, 8, 8))
    kinds = {keras.layers.Conv2D: "conv", keras.layers.BatchNormalization: "BN", keras.layers.ReLU: "ReLU"}
    assert [kinds[type(l)] for l in unit.pre] == pre
    assert _layer_kinds(unit) == branch
    assert [kinds[type(l)] for l in unit.post] == post


@pytest.mark.parametrize("form, kernels, widths", [
    ("basic", [3, 3], [16, 16]), ("bottleneck", [1, 3, 1], [16, 16, 64])])
@pytest.mark.parametrize("stride_on", ["first", "3x3"])
def test_forms_and_stride_position(form, kernels, widths, stride_on):
    unit = U.FullPreActUnit(16, form=form, strides=2, stride_on=stride_on)
    out = unit.compute_output_shape((None, 32, 32, 8))
    assert out == (None, 16, 16, widths[-1])
    unit.build((None, 32, 32, 8))
    convs = [l for l in unit.branch if isinstance(l, keras.layers.Conv2D)]
    assert [c.kernel_size[0] for c in convs] == kernels
    assert [c.filters for c in convs] == widths
    strided = 0 if stride_on == "first" else kernels.index(3)
    assert [c.strides[0] for c in convs] == [2 if i == strided else 1 for i in range(len(convs))]
    assert not any(c.use_bias for c in convs)
    # A strided 3x3 is padded one pixel on every side (Torch's pad 1), then unpadded.
    pads = {l.name: l.padding for l in unit.branch if isinstance(l, keras.layers.ZeroPadding2D)}
    assert [c.padding for c in convs] == [
        "valid" if i == strided and kernels[i] == 3 else "same" for i in range(len(convs))]
    assert pads == ({f"pad{strided + 1}": ((1, 1), (1, 1))} if kernels[strided] == 3 else {})
    y = unit(np.zeros((1, 32, 32, 8), "float32"))
    assert tuple(y.shape) == (1, 16, 16, widths[-1])


def test_defaults_bn_and_he_fan_out_init():
    unit = U.FullPreActUnit(64, form="basic")
    unit.build((None, 8, 8, 64))
    bns = [l for l in unit.pre + unit.branch if isinstance(l, keras.layers.BatchNormalization)]
    assert all(b.momentum == 0.9 and b.epsilon == 1e-5 for b in bns)
    kernel = to_np(unit.branch[0].kernel)
    # He et al. initialise with std sqrt(2 / (k * k * out_channels)), untruncated.
    expected = np.sqrt(2.0 / (3 * 3 * 64))
    assert abs(kernel.std() / expected - 1) < 0.03
    assert np.abs(kernel).max() > 2.5 * expected  # not truncated at 2 std
    custom = U.FullPreActUnit(8, bn_momentum=0.99, bn_epsilon=1e-3)
    custom.build((None, 8, 8, 8))
    assert custom.pre[0].momentum == 0.99 and custom.pre[0].epsilon == 1e-3


@pytest.mark.parametrize("placement", ["full_preact", "relu_only_preact"])
@pytest.mark.parametrize("form", ["basic", "bottleneck"])
def test_preact_unit_with_zeroed_branch_is_identity(rng, placement, form):
    width = 4 if form == "bottleneck" else 16
    unit = U.make_unit(placement, width, form=form)
    x = rng.normal(size=(2, 8, 8, 16)).astype("float32")
    unit.build(x.shape)
    randomise_bn(unit, rng)
    _zero_last(unit)
    # x_{l+1} = x_l exactly: identity shortcut, nothing after the addition.
    np.testing.assert_array_equal(to_np(unit(x)), x)
    np.testing.assert_array_equal(to_np(unit(x, training=True)), x)


def test_zero_init_residual_option(rng):
    x = rng.normal(size=(2, 8, 8, 16)).astype("float32")
    for placement in ("full_preact", "relu_only_preact"):
        unit = U.make_unit(placement, 16, zero_init_residual=True)
        np.testing.assert_array_equal(to_np(unit(x)), x)


@pytest.mark.parametrize("placement", ["original", "bn_after_addition"])
def test_post_activated_unit_with_zeroed_branch_is_not_identity(rng, placement):
    unit = U.make_unit(placement, 16)
    x = rng.normal(size=(2, 8, 8, 16)).astype("float32")
    unit.build(x.shape)
    _zero_last(unit)
    y = to_np(unit(x))
    assert np.all(y >= 0)  # the ReLU after the addition clips the negatives
    if placement == "original":
        np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert not np.allclose(y, x)


def _stack(placement, depth, rng, width=8):
    stack = [U.make_unit(placement, width, name=f"u{i}") for i in range(depth)]
    for u in stack:
        u.build((None, 6, 6, width))
        randomise_bn(u, rng)
    return stack


def test_eq4_signal_propagation_of_a_preact_stack(rng):
    """Paper Eq. 4: x_L = x_l + sum_{i=l}^{L-1} F(x_i) for identity units."""
    x0 = rng.normal(size=(2, 6, 6, 8)).astype("float32")
    xs, residuals = [x0], []
    for unit in _stack("full_preact", 6, rng):
        residuals.append(to_np(unit.F(unit.split(xs[-1])[1])))
        xs.append(to_np(unit(xs[-1])))
    for l in (0, 2, 4):
        np.testing.assert_allclose(xs[-1], xs[l] + sum(residuals[l:]), rtol=1e-5, atol=1e-5)


def test_eq4_fails_for_the_original_unit(rng):
    x0 = rng.normal(size=(2, 6, 6, 8)).astype("float32")
    x, residual_sum = x0, np.zeros_like(x0)
    for unit in _stack("original", 4, rng):
        residual_sum += to_np(unit.F(unit.split(x)[1]))
        x = to_np(unit(x))
    assert np.abs(x - (x0 + residual_sum)).max() > 0.1


@pytest.mark.parametrize("form", ["basic", "bottleneck"])
def test_projection_takes_the_preactivated_input(rng, form):
    """Appendix / authors' code: a shape-changing pre-act unit shares BN-ReLU with its projection."""
    unit = U.FullPreActUnit(8, form=form, strides=2)
    x = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    unit.build(x.shape)
    assert unit.preact_at == "shared"
    randomise_bn(unit, rng)
    _zero_last(unit)
    bn = unit.pre[0]
    mean, var, gamma, beta = (to_np(v) for v in (bn.moving_mean, bn.moving_variance, bn.gamma, bn.beta))
    activated = np.maximum(gamma * (x - mean) / np.sqrt(var + bn.epsilon) + beta, 0)
    kernel = to_np(unit.shortcut.proj.kernel)[0, 0]
    expected = np.einsum("bhwc,cd->bhwd", activated[:, ::2, ::2], kernel)
    out = to_np(unit(x))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    raw = np.einsum("bhwc,cd->bhwd", x[:, ::2, ::2], kernel)
    assert not np.allclose(out, raw, atol=1e-2)


def test_preact_ats(rng):
    x = rng.normal(size=(1, 8, 8, 16)).astype("float32")
    same = U.FullPreActUnit(16)
    same.build(x.shape)
    assert same.preact_at == "residual"  # identity shortcut sees the raw x
    # fb.resnet.torch's both_preact: a unit that changes shape activates once before the
    # split, also where projection "A" subsamples and zero-pads instead of projecting.
    padded = U.FullPreActUnit(32, strides=2, projection="A")
    padded.build(x.shape)
    assert padded.preact_at == "shared"
    first = U.FullPreActUnit(16, preact="shared")
    first.build(x.shape)
    assert first.preact_at == "shared" and len(first.pre) == 2
    none = U.FullPreActUnit(16, preact="none")
    none.build(x.shape)
    assert none.pre == [] and _layer_kinds(none)[0] == "conv"
    with pytest.raises(ValueError, match="only to pre-activation placements"):
        U.OriginalUnit(16, preact="shared")


def test_unit_errors():
    with pytest.raises(ValueError, match="Unknown placement 'full_pre_act'.*'full_preact'"):
        U.make_unit("full_pre_act", 8)
    with pytest.raises(ValueError, match="Unknown residual form 'wide'. Valid choices: 'basic', 'bottleneck'"):
        U.FullPreActUnit(8, form="wide")
    with pytest.raises(ValueError, match="Unknown stride_on"):
        U.FullPreActUnit(8, stride_on="last")
    with pytest.raises(TypeError, match="base class"):
        U.ResidualUnit(8)


def test_sync_bn_only_on_tensorflow():
    if BACKEND == "tensorflow":
        unit = U.FullPreActUnit(8, sync_bn=True)
        unit.build((None, 4, 4, 8))
        assert unit.pre[0].synchronized
    else:
        with pytest.raises(ValueError, match="only on the TensorFlow backend"):
            U.FullPreActUnit(8, sync_bn=True)


COMBOS = list(itertools.product(PLACEMENTS, SHORTCUTS, ["basic", "bottleneck"], [1, 2]))


@pytest.mark.parametrize("placement, shortcut, form, strides", COMBOS)
def test_every_unit_config_round_trips(rng, placement, shortcut, form, strides):
    unit = U.make_unit(placement, 4, form=form, strides=strides, shortcut=shortcut, name="unit")
    x = rng.normal(size=(2, 8, 8, 6)).astype("float32")
    y = to_np(unit(x))
    config = unit.get_config()
    clone = U.PLACEMENTS[placement].from_config(config)
    clone.build(x.shape)
    clone.set_weights(unit.get_weights())
    np.testing.assert_array_equal(to_np(clone(x)), y)
    assert clone.get_config() == config
    assert unit.compute_output_shape(x.shape) == y.shape
