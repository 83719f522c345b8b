"""Shortcut layers (paper Fig. 2, Table 1): arithmetic on known inputs."""

import numpy as np
import pytest
import keras

from keras_preact import shortcuts as sc
from conftest import to_np


def _inputs(rng, c=8, hw=6):
    x = rng.normal(size=(2, hw, hw, c)).astype("float32")
    r = rng.normal(size=(2, hw, hw, c)).astype("float32")
    return x, r


def _conv1x1(x, kernel, bias=None, stride=1):
    y = np.einsum("bhwc,cd->bhwd", x[:, ::stride, ::stride, :], kernel[0, 0])
    return y if bias is None else y + bias


def test_identity_adds(rng):
    x, r = _inputs(rng)
    layer = sc.IdentityShortcut(8)
    np.testing.assert_array_equal(to_np(layer(x, r)), x + r)
    assert layer.proj is None and not layer.weights


@pytest.mark.parametrize("scale", [0.5, 0.25])
def test_constant_scaling(rng, scale):
    x, r = _inputs(rng)
    out = to_np(sc.ConstantScalingShortcut(8, scale=scale)(x, r))
    np.testing.assert_allclose(out, scale * x + r, rtol=1e-6, atol=1e-6)
    out = to_np(sc.ConstantScalingShortcut(8, scale=scale, scale_residual=True)(x, r))
    np.testing.assert_allclose(out, scale * x + (1 - scale) * r, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", [sc.ExclusiveGatingShortcut, sc.ShortcutOnlyGatingShortcut])
def test_gating_with_initial_bias(rng, cls):
    x, r = _inputs(rng)
    layer = cls(8, gate_bias=-6.0)
    layer.build(x.shape)
    np.testing.assert_array_equal(to_np(layer.gate_conv.bias), np.full(8, -6.0))
    # With a zero gate kernel the gate is exactly sigmoid(b_g) everywhere.
    layer.gate_conv.kernel.assign(np.zeros((1, 1, 8, 8), "float32"))
    g = 1.0 / (1.0 + np.exp(6.0))
    residual_weight = g if cls is sc.ExclusiveGatingShortcut else 1.0
    np.testing.assert_allclose(
        to_np(layer(x, r)), (1 - g) * x + residual_weight * r, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("cls", [sc.ExclusiveGatingShortcut, sc.ShortcutOnlyGatingShortcut])
def test_gating_with_learned_gate(rng, cls):
    x, r = _inputs(rng)
    layer = cls(8, gate_bias=-1.0)
    layer.build(x.shape)
    g = 1.0 / (1.0 + np.exp(-_conv1x1(x, to_np(layer.gate_conv.kernel), -1.0)))
    expected = (1 - g) * x + (g * r if cls is sc.ExclusiveGatingShortcut else r)
    np.testing.assert_allclose(to_np(layer(x, r)), expected, rtol=1e-4, atol=1e-5)


def test_conv1x1_projects_every_unit(rng):
    x, r = _inputs(rng)
    layer = sc.Conv1x1Shortcut(8, projection="B")
    layer.build(x.shape)
    assert layer.mode == "project"
    kernel = to_np(layer.proj.kernel)
    np.testing.assert_allclose(to_np(layer(x, r)), _conv1x1(x, kernel) + r, rtol=1e-4, atol=1e-5)


def test_dropout_off_at_inference_on_in_training(rng):
    x, r = _inputs(rng, c=16, hw=16)
    layer = sc.DropoutShortcut(16, rate=0.5)
    np.testing.assert_array_equal(to_np(layer(x, r)), x + r)
    np.testing.assert_array_equal(to_np(layer(x, r, training=False)), x + r)
    # Each shortcut value is dropped or scaled by 1 / (1 - 0.5), exactly: compared without
    # dividing by x (near x = 0 the quotient magnified rounding past any tolerance).
    out = to_np(layer(x, r, training=True))
    kept, dropped = out == 2 * x + r, out == r
    assert np.all(kept | dropped)
    assert 0.4 < np.mean(dropped) < 0.6


def test_projection_A_subsamples_and_zero_pads(rng):
    x = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    r = rng.normal(size=(2, 4, 4, 12)).astype("float32")
    layer = sc.IdentityShortcut(12, strides=2, projection="A")
    out = to_np(layer(x, r))
    np.testing.assert_array_equal(out[..., :4], x[:, ::2, ::2, :] + r[..., :4])
    np.testing.assert_array_equal(out[..., 4:], r[..., 4:])
    assert not layer.weights


@pytest.mark.parametrize(
    "projection, strides, cin, cout, mode",
    [
        ("A", 1, 8, 8, "identity"), ("A", 2, 8, 16, "pad"),
        ("B", 1, 8, 8, "identity"), ("B", 2, 8, 8, "project"), ("B", 1, 8, 16, "project"),
        ("C", 1, 8, 8, "project"), ("C", 2, 8, 16, "project"),
    ],
)
def test_projection_modes(projection, strides, cin, cout, mode):
    layer = sc.IdentityShortcut(cout, strides=strides, projection=projection)
    layer.build((None, 8, 8, cin))
    assert layer.mode == mode
    assert layer.compute_output_shape((None, 8, 8, cin)) == (None, 8 // strides, 8 // strides, cout)
    if mode == "project":
        assert layer.proj.strides == (strides, strides) and not layer.proj.use_bias


def test_projection_A_cannot_shrink():
    with pytest.raises(ValueError, match="cannot reduce 16 channels to 8; use 'B' or 'C'"):
        sc.IdentityShortcut(8, projection="A", strides=2).build((None, 8, 8, 16))


def test_resolve_shortcut_defaults_and_errors():
    assert sc.resolve_shortcut("identity") == {"name": "identity"}
    assert sc.resolve_shortcut("exclusive_gating") == {"name": "exclusive_gating", "gate_bias": -6.0}
    assert sc.resolve_shortcut({"name": "constant_scaling", "scale_residual": True}) == {
        "name": "constant_scaling", "scale": 0.5, "scale_residual": True}
    with pytest.raises(ValueError, match="Valid choices: 'identity', 'constant_scaling'.*Did you mean 'dropout'"):
        sc.resolve_shortcut("dropuot")
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['rate'\].*Valid options: scale, scale_residual"):
        sc.resolve_shortcut({"name": "constant_scaling", "rate": 0.1})
    with pytest.raises(ValueError, match="'rate' must be a number, got 'half'"):
        sc.resolve_shortcut({"name": "dropout", "rate": "half"})
    with pytest.raises(ValueError, match="'scale_residual' must be true or false"):
        sc.resolve_shortcut("constant_scaling:scale_residual=1")
    # Values are the layer's to check, when it is built: no throwaway layer here.
    assert sc.resolve_shortcut({"name": "dropout", "rate": 1.0})["rate"] == 1.0
    with pytest.raises(ValueError, match=r"`rate` must be a finite number in \[0.0, 1.0\)"):
        sc.make_shortcut({"name": "dropout", "rate": 1.0}, 8)
    with pytest.raises(ValueError, match="'name' key"):
        sc.resolve_shortcut({"scale": 0.5})
    with pytest.raises(ValueError, match="Unknown projection 'D'"):
        sc.IdentityShortcut(8, projection="D")


@pytest.mark.parametrize("name", list(sc.SHORTCUTS))
@pytest.mark.parametrize("projection", ["A", "B", "C"])
def test_shortcut_config_round_trip(rng, name, projection):
    x = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    r = rng.normal(size=(2, 4, 4, 8)).astype("float32")
    layer = sc.make_shortcut(name, 8, strides=2, projection=projection, name="sc")
    out = to_np(layer(x, r))
    clone = layer.__class__.from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(to_np(clone(x, r)), out)
    assert clone.get_config() == layer.get_config()
    assert keras.saving.get_registered_name(layer.__class__).startswith("keras_preact>")


@pytest.mark.parametrize("name", list(sc.SHORTCUTS))
def test_layer_defaults_are_the_catalogs(name):
    """The options a command line resolves are the layer's own defaults (said in catalog.py)."""
    import inspect

    cls = sc.SHORTCUTS[name]
    params = inspect.signature(cls.__init__).parameters
    assert cls.defaults == sc.SHORTCUT_OPTIONS[name]
    assert {k: params[k].default for k in cls.defaults} == cls.defaults
