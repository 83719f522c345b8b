"""The model carries its configuration: ``keras_preact.PreActResNet``.

Every builder returns one; its ``get_config()`` holds the builder's arguments and
``from_config`` rebuilds the same network; a ``.keras`` round trip with ``safe_mode=True``
gives back the class and the configuration; files written before 0.2.0 (plain functional
models) still load; ``pyramid_outputs`` feeds a multi-output model.
"""

import numpy as np
import pytest
import keras

import keras_preact as kp
from keras_preact import models
from keras_preact.scanned import unrolled_weights
from conftest import to_np

SMALL = dict(input_shape=(32, 32, 3))


def _params(model):
    return sum(int(np.prod(w.shape)) for w in model.weights)


@pytest.mark.parametrize("arch", ["resnet20", "resnet164", "resnet18", "resnet18_cifar",
                                  "resnet50"])
def test_every_builder_returns_a_network_that_rebuilds_from_its_configuration(arch):
    model = kp.get_model(arch)
    assert type(model) is kp.PreActResNet
    config = model.get_config()
    again = kp.PreActResNet.from_config(config)
    assert again.get_config() == config
    assert [w.path for w in again.weights] == [w.path for w in model.weights]
    assert [tuple(w.shape) for w in again.weights] == [tuple(w.shape) for w in model.weights]
    spec = kp.model_info(arch)
    assert model.depth == spec["depth"]
    assert config["stage_units"] == list(spec["stage_units"])


def test_the_configuration_is_the_builders_arguments():
    regularizer = keras.regularizers.L2(5e-5)
    model = kp.PreActResNet110(placement="original", classes=7, classifier_activation=None,
                               shortcut="exclusive_gating:gate_bias=-7", projection="A",
                               kernel_regularizer=regularizer, bn_momentum=0.99)
    config = model.get_config()
    assert {k: config[k] for k in ("placement", "classes", "classifier_activation",
                                   "projection", "bn_momentum", "stage_units", "form")} == {
        "placement": "original", "classes": 7, "classifier_activation": None,
        "projection": "A", "bn_momentum": 0.99, "stage_units": [18, 18, 18], "form": "basic"}
    assert config["shortcut"] == {"name": "exclusive_gating", "gate_bias": -7.0}
    assert config["kernel_regularizer"]["config"] == {"l2": 5e-5}
    rebuilt = kp.PreActResNet.from_config(config)
    unit = rebuilt.get_layer("stage3_unit18")
    assert unit.variant == "original" and unit.shortcut.gate_bias == -7.0
    assert unit.kernel_regularizer.get_config() == {"l2": 5e-5}
    assert rebuilt.get_layer("predictions").units == 7


@pytest.mark.parametrize("options", [
    dict(),
    dict(scan_units=True, placement="relu_only_preact"),
    dict(normalization=((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)), pooling="avg",
         include_top=False),
])
def test_keras_file_round_trip_gives_back_the_class_and_configuration(tmp_path, rng, options):
    model = kp.PreActResNet20(**SMALL, **options)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, w.shape) ** (2 if "variance" in w.path else 1))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert type(loaded) is kp.PreActResNet
    assert loaded.get_config() == model.get_config()
    x = rng.uniform(0, 255 if "normalization" in options else 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(to_np(loaded(x)), to_np(model(x)))


def test_a_network_on_an_input_tensor_keeps_the_layers_before_it(tmp_path, rng):
    inputs = keras.Input((32, 32, 3), name="pixels")
    scaled = keras.layers.Rescaling(1 / 255, name="to_unit")(inputs)
    model = kp.PreActResNet20(input_tensor=scaled, classifier_activation=None)
    assert model.inputs[0] is inputs and model.get_layer("to_unit") is not None
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert type(loaded) is kp.PreActResNet and loaded.get_config() == model.get_config()
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(to_np(loaded(x)), to_np(model(x)), rtol=0, atol=1e-6)
    # The layers before the tensor are applied: the same as feeding x / 255 to the network.
    bare = kp.PreActResNet20(classifier_activation=None)
    bare.set_weights(model.get_weights())
    expected = to_np(bare(x / 255))
    np.testing.assert_allclose(to_np(model(x)), expected, rtol=0,
                               atol=1e-5 * max(1.0, np.abs(expected).max()))


def test_a_network_on_a_keras_input_keeps_its_name_and_dtype(tmp_path):
    inputs = keras.Input((32, 32, 3), name="pixels", dtype="float16")
    model = kp.PreActResNet20(input_tensor=inputs, classifier_activation=None)
    path = str(tmp_path / "model.keras")
    model.save(path)
    for network in (model, kp.PreActResNet.from_config(model.get_config()), model.replace(),
                    keras.saving.load_model(path, safe_mode=True, compile=False)):
        assert network.inputs[0].name == "pixels" and network.inputs[0].dtype == "float16"
        assert network.get_config() == model.get_config()
    wider = model.replace(input_shape=(64, 64, 3))
    assert wider.inputs[0].name == "pixels" and wider.inputs[0].dtype == "float16"
    assert wider.input_shape == (None, 64, 64, 3)
    scaled = keras.layers.Rescaling(1 / 255)(keras.Input((32, 32, 3)))
    with pytest.raises(ValueError, match="after other layers"):
        kp.PreActResNet20(input_tensor=scaled).replace(input_shape=(64, 64, 3))


def test_a_file_written_before_the_class_still_loads(tmp_path, rng):
    """Version 0.1 saved a plain functional model of the same layers."""
    model = kp.PreActResNet20(**SMALL, classifier_activation=None)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, w.shape) ** (2 if "variance" in w.path else 1))
    legacy = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    path = str(tmp_path / "legacy.keras")
    legacy.save(path)
    loaded = kp.load_keras_file(path)
    assert type(loaded) is not kp.PreActResNet  # a plain keras.Model, as written
    x = rng.normal(0, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(to_np(loaded(x)), to_np(model(x)))
    fresh = kp.PreActResNet20(**SMALL, classifier_activation=None, weights=path)
    np.testing.assert_array_equal(to_np(fresh(x)), to_np(model(x)))
    with pytest.raises(ValueError, match="load the file with keras_preact.load_weights"):
        models.scan(loaded)


def test_scan_and_unroll_rebuild_with_the_same_weights(rng):
    model = kp.PreActResNet20(**SMALL, placement="original")
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, w.shape) ** (2 if "variance" in w.path else 1))
    scanned = models.scan(model, remat=True)
    assert scanned.get_config() == {**model.get_config(), "scan_units": True, "remat": True}
    unrolled = models.unroll(scanned)
    assert unrolled.get_config() == model.get_config()
    expected = {p: to_np(v) for p, v in unrolled_weights(model).items()}
    for form in (scanned, unrolled):
        got = {p: to_np(v) for p, v in unrolled_weights(form).items()}
        assert got.keys() == expected.keys()
        assert all(np.array_equal(got[p], expected[p]) for p in got)


def test_pyramid_outputs_feed_a_multi_output_model(rng):
    model = kp.PreActResNet50(input_shape=(64, 64, 3), include_top=False)
    assert list(model.pyramid_outputs) == ["P2", "P3", "P4", "P5"]
    features = keras.Model(model.input, model.pyramid_outputs)
    x = rng.normal(0, 1, (2, 64, 64, 3)).astype("float32")
    out = {k: to_np(v) for k, v in features(x).items()}
    assert {k: v.shape for k, v in out.items()} == {
        "P2": (2, 16, 16, 256), "P3": (2, 8, 8, 512), "P4": (2, 4, 4, 1024),
        "P5": (2, 2, 2, 2048)}
    # Each level is the output of its stage's last unit.
    last = {"P2": "stage1_unit3", "P3": "stage2_unit4", "P4": "stage3_unit6",
            "P5": "stage4_unit3"}
    for level, name in last.items():
        unit_out = keras.Model(model.input, model.get_layer(name).output)
        expected = to_np(unit_out(x))
        np.testing.assert_allclose(out[level], expected, rtol=0,
                                   atol=1e-5 * max(1.0, np.abs(expected).max()))
    # A head on every level (an FPN-like sum) trains through the backbone.
    head = [keras.layers.Conv2D(8, 1)(t) for t in model.pyramid_outputs.values()]
    pooled = keras.layers.Add()([keras.layers.GlobalAveragePooling2D()(t) for t in head])
    detector = keras.Model(model.input, keras.layers.Dense(3)(pooled))
    detector.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    before = to_np(model.get_layer("stage1_unit1").weights[0]).copy()
    assert np.isfinite(detector.train_on_batch(x, np.array([0, 2])))
    assert not np.array_equal(before, to_np(model.get_layer("stage1_unit1").weights[0]))


def test_pyramid_levels_follow_the_strides():
    assert {k: tuple(v.shape[1:]) for k, v in kp.PreActResNet20().pyramid_outputs.items()} == {
        "P0": (32, 32, 16), "P1": (16, 16, 32), "P2": (8, 8, 64)}
    # keras.applications' layout strides the last unit of stages 1-3: stage 3 and 4 share /32.
    model = kp.PreActResNet50(layout="keras_applications", input_shape=(64, 64, 3),
                              include_top=False)
    assert {k: tuple(v.shape[1:]) for k, v in model.pyramid_outputs.items()} == {
        "P3": (8, 8, 256), "P4": (4, 4, 512), "P5": (2, 2, 2048)}


def test_a_scanned_network_written_before_the_class_unrolls(tmp_path, rng):
    """0.1 saved its scanned networks (TensorFlow's default form on a CPU) as plain
    functional models: unroll (and so export, evaluate, analyze) still reads them."""
    model = kp.PreActResNet20(**SMALL, classifier_activation=None, scan_units=True)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, w.shape) ** (2 if "variance" in w.path else 1))
    path = str(tmp_path / "legacy.keras")
    keras.Model(model.inputs[0], model.outputs[0], name=model.name).save(path)
    loaded = kp.load_keras_file(path)
    unrolled = models.unroll(loaded)
    assert [layer.name for layer in unrolled.layers] == [
        layer.name for layer in kp.PreActResNet20(**SMALL).layers]
    x = rng.normal(0, 1, (2, 32, 32, 3)).astype("float32")
    expected = to_np(model(x))  # (random weights: logits far from 1; compared at their scale)
    np.testing.assert_allclose(to_np(unrolled(x)), expected, rtol=0,
                               atol=1e-5 * np.abs(expected).max())
    from keras_preact.deploy import export

    assert export.describe(unrolled)["residual_units"] == 9
    nested = keras.Sequential([keras.Input((32, 32, 3)), model])
    assert export.describe(nested)["residual_units"] == 9
