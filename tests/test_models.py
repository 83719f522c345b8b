"""Network builders: the paper's parameter counts, layouts, applications arguments, errors."""

import numpy as np
import pytest
import keras

import keras_preact as kp
from keras_preact import models
from conftest import to_np


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def conv_weights(model):
    return sum(int(np.prod(w.shape)) for w in model.weights if len(w.shape) == 4)


def analytic_params(spec, classes):
    """Trainable parameters from the paper's architecture, counted by hand.

    Independent of the Keras code: conv kernels (no bias), BN gamma/beta, dense.
    Pre-activation layout: one BN-ReLU before every unit (shared with the
    projection where the shape changes), a final BN-ReLU; the ImageNet stem
    carries the first BN-ReLU itself. An arch that binds projection A has no projections;
    one whose head is not BN-ReLU no final BN.
    """
    fixed = dict(spec.options)
    bottleneck = spec.form == "bottleneck"
    if spec.family == "cifar":
        widths, strides, c = (16, 32, 64), (1, 2, 2), 16
        total = 3 * 3 * 3 * c
    else:
        widths, strides, c = (64, 128, 256, 512), (1, 2, 2, 2), 64
        total = (7 * 7 * 3 * c + 2 * c) if spec.stem == "imagenet" else 3 * 3 * 3 * c
    first = True
    for units, w, s in zip(spec.stage_units, widths, strides):
        for u in range(units):
            out = 4 * w if bottleneck else w
            stride = s if u == 0 else 1
            if not (first and spec.stem == "imagenet" and spec.family == "imagenet"):
                total += 2 * c  # pre-activation BN
            first = False
            if bottleneck:
                total += c * w + 2 * w + 9 * w * w + 2 * w + w * out
            else:
                total += 9 * c * w + 2 * w + 9 * w * w
            if (stride != 1 or c != out) and fixed.get("projection", "B") == "B":
                total += c * out  # 1x1 projection (option B)
            c = out
    head_bn = fixed.get("head_activation", "bn_relu") == "bn_relu"
    return total + 2 * c * head_bn + c * classes + classes


# -- the paper's figures --------------------------------------------------------
def test_resnet164_parameters():
    model = kp.PreActResNet164(classes=10)
    assert trainable(model) == 1_703_258
    assert model.output_shape == (None, 10)


@pytest.mark.slow
def test_resnet1001_parameters_and_forward_pass():
    model = kp.PreActResNet1001(classes=10)
    assert conv_weights(model) == 10_175_920  # the paper's 10.2M
    assert trainable(model) == 10_327_706
    # 333 units, one line each in model.summary().
    assert len(model.layers) < 400
    assert sum(l.name.startswith("stage") for l in model.layers) == 333
    # Untrained BN moving statistics (mean 0, var 1) do not normalize, so an
    # untrained 1001-layer net overflows in inference mode; use batch statistics.
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    y = to_np(model(x, training=True))
    assert y.shape == (2, 10) and np.allclose(y.sum(axis=1), 1.0, atol=1e-5)


def test_resnet110_about_1_7m():
    assert trainable(kp.PreActResNet110()) == 1_730_522


@pytest.mark.slow
def test_resnet200_about_64_7m_and_forward_pass():
    spec = kp.MODELS["resnet200"]
    model = kp.PreActResNet200()
    assert trainable(model) == spec.params == analytic_params(spec, 1000) == 64_666_152  # 64.7M
    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype("float32")
    y = to_np(model(x, training=True))
    assert y.shape == (2, 1000) and np.all(np.isfinite(y))


FULL_DEPTH = ("resnet1001", "resnet1202", "resnet200")
LARGE = ("resnet101", "resnet152")  # built only with --run-large


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n
                                  for n in kp.list_models() if n not in FULL_DEPTH])
def test_registry_params_match_builders_and_hand_count(name):
    """(The full-depth nets are built once, by their own tests below.)"""
    spec = kp.MODELS[name]
    model = kp.get_model(name)
    assert trainable(model) == spec.params == analytic_params(spec, spec.classes)
    assert model.input_shape == (None, *spec.input_shape)


@pytest.mark.slow
def test_resnet1202_parameters_and_forward_pass():
    spec = kp.MODELS["resnet1202"]
    model = kp.PreActResNet1202()
    assert trainable(model) == spec.params == analytic_params(spec, 10)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    y = to_np(model(x, training=True))
    assert y.shape == (2, 10) and np.all(np.isfinite(y))


def test_zero_init_residual_keeps_an_untrained_deep_net_finite_in_inference(rng):
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    depth = 9 * 20 + 2  # 60 units
    plain = models.preact_resnet_cifar(depth, "bottleneck", classifier_activation=None)
    zeroed = models.preact_resnet_cifar(depth, "bottleneck", classifier_activation=None,
                                        zero_init_residual=True)
    # Untrained BN statistics do not normalize: the signal grows with every unit
    # (ResNet-1001 overflows float32), unless each residual branch starts at zero.
    assert np.abs(to_np(plain(x))).max() > 1e4
    assert np.abs(to_np(zeroed(x))).max() < 1e2


def test_hand_count_reproduces_the_papers_figures():
    assert analytic_params(kp.MODELS["resnet164"], 10) == 1_703_258
    assert analytic_params(kp.MODELS["resnet1001"], 10) == kp.MODELS["resnet1001"].params == 10_327_706


# -- layouts -------------------------------------------------------------------
def test_preact_layout_cifar():
    model = kp.PreActResNet20()
    names = [l.name for l in model.layers]
    assert names[:2] == ["image", "stem_conv"]  # no BN-ReLU in the stem ...
    assert model.get_layer("stage1_unit1").preact_at == "shared"  # ... it opens unit 1
    assert model.get_layer("stage1_unit2").preact_at == "residual"
    assert model.get_layer("stage2_unit1").preact_at == "shared"
    assert names[-4:] == ["post_bn", "post_relu", "avg_pool", "predictions"]
    assert [n for n in names if n.startswith("stage")] == [
        f"stage{s}_unit{u}" for s in (1, 2, 3) for u in (1, 2, 3)]


def test_preact_layout_imagenet():
    model = kp.PreActResNet50(input_shape=(64, 64, 3), classes=5)
    names = [l.name for l in model.layers]
    assert names[:7] == ["image", "stem_pad", "stem_conv", "stem_bn", "stem_relu", "pool_pad", "stem_pool"]
    assert model.get_layer("stage1_unit1").preact_at == "none"
    assert model.get_layer("stage1_unit1").stride_on == "3x3"
    assert model.get_layer("stage4_unit1").output.shape == (None, 2, 2, 2048)
    assert "post_bn" in names


def test_cifar_stem_preact_resnet18():
    model = kp.PreActResNet18(stem="cifar")
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
    assert model.get_layer("stem_conv").kernel_size == (3, 3)
    assert "stem_pool" not in [l.name for l in model.layers]
    assert model.get_layer("stage4_unit2").output.shape == (None, 4, 4, 512)
    assert model.get_layer("stage1_unit1").preact_at == "shared"


def test_stem_head_and_preact_options_place_what_they_say():
    model = kp.PreActResNet20(stem_activation="relu", head_activation=None, preact="residual")
    names = [l.name for l in model.layers]
    assert names[1:3] == ["stem_conv", "stem_relu"] and "stem_bn" not in names
    assert names[-2:] == ["avg_pool", "predictions"] and "post_bn" not in names
    assert {model.get_layer(f"stage{s}_unit{u}").preact_at
            for s in (1, 2, 3) for u in (1, 2, 3)} == {"residual"}
    # A stem that ends in BN-ReLU activates the first unit, as the ImageNet stem does.
    stem_bn = kp.PreActResNet20(stem_activation="bn_relu", head_activation="relu")
    assert stem_bn.get_layer("stage1_unit1").preact_at == "none"
    assert stem_bn.get_layer("stage2_unit1").preact_at == "shared"
    assert [l.name for l in stem_bn.layers][-3] == "post_relu"
    # The ImageNet stem without an activation pools signed values: padded with -inf.
    bare = kp.PreActResNet18(input_shape=(64, 64, 3), classes=4, stem_activation=None)
    assert type(bare.get_layer("stem_pool")).__name__ == "PaddedMaxPooling2D"
    assert bare.get_layer("stage1_unit1").preact_at == "shared"


@pytest.mark.parametrize("call, message", [
    (lambda: kp.PreActResNet20(placement="original", preact="residual"),
     "preact='residual' says where a pre-activation unit's shortcut branches; placement "
     "'original' has no pre-activation"),
    (lambda: kp.PreActResNet20(preact="both"), "Unknown preact 'both'. Valid choices: 'auto', "
     "'residual', 'shared', 'none'"),
    (lambda: kp.PreActResNet20(stem_activation="bn"), "Unknown stem_activation 'bn'. Valid "
     "choices: 'auto', 'bn_relu', 'relu', None"),
    (lambda: kp.PreActResNet50(layout="timm", stem_activation="relu"),
     "layout='timm' fixes the stem (no activation), the head (BN-ReLU) and where each unit's "
     "shortcut branches; drop stem_activation='relu' or use layout='paper'"),
    (lambda: kp.get_model("resnet18_cifar_option_a", placement="original"),
     "arch 'resnet18_cifar_option_a' is built of pre-activation units (preact='residual'); "
     "placement 'original' has none: use relu_only_preact or full_preact with it"),
    (lambda: kp.get_model("resnet18_pytorch_cifar", preact="residual"),
     "arch 'resnet18_pytorch_cifar' is PreActResNet18 with stem='cifar', projection='B', "
     "preact='auto', stem_activation=None, head_activation=None; preact='residual' would "
     "make it another network"),
])
def test_stem_head_and_preact_options_refuse_what_cannot_be(call, message):
    with pytest.raises(ValueError) as e:
        call()
    assert message in str(e.value)


def test_the_cifar_variants_scan_unroll_and_round_trip(tmp_path, rng):
    """The options live in the configuration: scan and unroll rebuild from it, a .keras file
    reloads it (safe_mode), outputs equal."""
    model = kp.PreActResNet50(stem="cifar", classes=3, stem_activation=None, head_activation=None,
                              preact="auto", input_shape=(32, 32, 3))
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    y = to_np(model(x))
    scanned = models.scan(model)
    assert any(type(l).__name__ == "ScannedUnits" for l in scanned.layers)
    np.testing.assert_allclose(to_np(scanned(x)), y, rtol=1e-5, atol=1e-5)
    assert scanned.get_config()["preact"] == "auto" and scanned.get_config()["head_activation"] is None
    option_a = kp.get_model("resnet18_cifar_option_a", classes=3)
    assert option_a.name == "preact_resnet18_cifar_option_a"  # (three 18s share a stem)
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    path = tmp_path / "a.keras"
    option_a.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_np(loaded(x)), to_np(option_a(x)))
    assert loaded.get_config()["stem_activation"] == "relu"


def test_original_placement_keeps_classic_layout():
    model = kp.PreActResNet20(placement="original")
    names = [l.name for l in model.layers]
    assert names[1:4] == ["stem_conv", "stem_bn", "stem_relu"] and "post_bn" not in names
    assert isinstance(model.get_layer("stage1_unit1"), kp.units.OriginalUnit)
    assert model.name == "resnet20_original"


def test_cifar_stride_on_first_default():
    model = kp.PreActResNet164()
    unit = model.get_layer("stage2_unit1")
    assert unit.stride_on == "first" and unit.branch[0].strides == (2, 2)


def test_summary_reads_one_line_per_unit(capsys):
    kp.PreActResNet164().summary()
    out = capsys.readouterr().out
    assert "stage3_unit18 (FullPreActUnit)" in out
    assert len(out.splitlines()) < 2 * 60 + 20  # 60 layers, two lines each
    assert "1,703,258" in out


# -- keras.applications arguments -------------------------------------------------
def test_include_top_and_pooling():
    x = np.zeros((1, 32, 32, 3), "float32")
    assert kp.PreActResNet20(include_top=False).output_shape == (None, 8, 8, 64)
    assert kp.PreActResNet20(include_top=False, pooling="avg").output_shape == (None, 64)
    assert kp.PreActResNet20(include_top=False, pooling="max").output_shape == (None, 64)
    logits = kp.PreActResNet20(classes=7, classifier_activation=None)
    assert logits.get_layer("predictions").activation is keras.activations.linear
    assert to_np(logits(x)).shape == (1, 7)
    assert kp.PreActResNet20(input_shape=(None, None, 3), include_top=False).output_shape == (None, None, None, 64)


def test_input_tensor_and_name():
    inp = keras.Input((40, 40, 3))
    model = kp.PreActResNet20(input_tensor=inp, name="mine")
    assert model.name == "mine" and model.inputs[0] is inp
    assert model.output_shape == (None, 10)


def test_placement_and_shortcut_overrides():
    model = kp.PreActResNet20(placement="relu_only_preact",
                              shortcut={"name": "exclusive_gating", "gate_bias": -7.0})
    unit = model.get_layer("stage2_unit3")
    assert isinstance(unit, kp.units.ReLUOnlyPreActUnit)
    assert isinstance(unit.shortcut, kp.shortcuts.ExclusiveGatingShortcut)
    assert unit.shortcut.gate_bias == -7.0


def test_sync_bn_reaches_every_bn_on_tensorflow_only():
    if keras.backend.backend() != "tensorflow":
        with pytest.raises(ValueError, match="only on the TensorFlow backend"):
            kp.PreActResNet18(sync_bn=True)
        return
    model = kp.PreActResNet18(sync_bn=True, input_shape=(32, 32, 3))
    bns = [l for l in model._flatten_layers(recursive=True)
           if isinstance(l, keras.layers.BatchNormalization)]
    # stem, unit 1 (inner BN only: the stem activates it), 7 units x (pre-activation + inner), post
    assert len(bns) == 1 + 1 + 7 * 2 + 1 and all(b.synchronized for b in bns)


def test_projection_A_has_no_projection_weights():
    a = kp.PreActResNet20(projection="A")
    b = kp.PreActResNet20()
    assert trainable(b) - trainable(a) == 16 * 32 + 32 * 64


# -- saving and weights ------------------------------------------------------------
@pytest.mark.parametrize("build", [
    lambda: models.preact_resnet_cifar(11, "bottleneck"),
    lambda: kp.PreActResNet20(placement="original", shortcut="shortcut_only_gating"),
    lambda: models.preact_resnet_imagenet(18, input_shape=(64, 64, 3), classes=4),
    lambda: kp.PreActResNet18(stem="cifar", classes=3),
], ids=["cifar_bottleneck", "cifar_basic_original_gated", "imagenet", "imagenet_cifar_stem"])
def test_keras_file_round_trip(tmp_path, rng, build):
    model = build()
    x = rng.normal(size=(2, *model.input_shape[1:])).astype("float32")
    y = to_np(model(x))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_np(loaded(x)), y)
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]


def test_weights_argument_loads_files(tmp_path, rng):
    source = kp.PreActResNet20(classes=4)
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    y = to_np(source(x))
    source.save_weights(tmp_path / "w.weights.h5")
    source.save(tmp_path / "m.keras")
    for path in (tmp_path / "w.weights.h5", str(tmp_path / "m.keras")):
        model = kp.PreActResNet20(classes=4, weights=path)
        np.testing.assert_array_equal(to_np(model(x)), y)
    # What differs is named: the layers and their shapes, or the weights one side lacks.
    with pytest.raises(ValueError, match=r"do not fit 'preact_resnet20': shapes differ "
                       r"\(predictions/kernel: \(64, 4\) in the file, \(64, 10\) in the model; "
                       r"predictions/bias: \(4,\) in the file, \(10,\) in the model\)"):
        kp.PreActResNet20(classes=10, weights=str(tmp_path / "m.keras"))
    # ResNet-32 has 2 more units per stage; each holds BN (4) + conv + BN (4) + conv = 10.
    with pytest.raises(ValueError, match=r"do not fit 'preact_resnet32': 60 weights not in the "
                       r"file \(e.g. stage1_unit4/preact_bn/gamma\)"):
        kp.PreActResNet32(classes=4, weights=str(tmp_path / "m.keras"))
    with pytest.raises(ValueError, match=r"do not fit 'preact_resnet20' \(the first mismatch is "
                       r"predictions/kernel: \(64, 4\) in the file, \(64, 10\) in the model"):
        kp.PreActResNet20(classes=10, weights=str(tmp_path / "w.weights.h5"))


def test_weights_that_are_damaged_or_would_run_code(tmp_path):
    garbage = tmp_path / "x.keras"
    garbage.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is not a readable .keras file: it is damaged or truncated"):
        kp.PreActResNet20(weights=str(garbage))
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="Refusing to load .*lambda.keras': loading it would run "
                       "code it carries"):
        kp.PreActResNet20(weights=str(tmp_path / "lambda.keras"))
    # A .weights.h5 that is not HDF5 is named (h5py's own error names no file) ...
    (tmp_path / "x.weights.h5").write_bytes(b"x" * 300)
    with pytest.raises(ValueError, match=r"'.*x\.weights\.h5' is not a \.weights\.h5 file \(it has "
                       r"no HDF5 signature\)"):
        kp.PreActResNet20(weights=str(tmp_path / "x.weights.h5"))
    # ... and one of another network says which layer does not fit (not Keras' placeholder).
    plain = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    plain.save_weights(tmp_path / "plain.weights.h5")
    with pytest.raises(ValueError, match=r"\(41 layers could not be loaded; the first: Layer "
                       r"'stem_conv' expected 1 variables, but received 2") as caught:
        kp.PreActResNet20(weights=str(tmp_path / "plain.weights.h5"))
    assert "Example error message" not in str(caught.value)


# -- errors ----------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: models.preact_resnet_cifar(100, "basic"), r"depth 6n\+2 with n >= 1 \(e.g. 8, 14, 20"),
    (lambda: models.preact_resnet_cifar(120, "bottleneck"), r"depth 9n\+2 .*164, 1001"),
    (lambda: models.preact_resnet_imagenet(42), "Valid depths: 18, 34, 50, 101, 152, 200"),
    (lambda: kp.PreActResNet20(placement="preact"), "Unknown placement 'preact'. Valid choices: 'original'"),
    (lambda: kp.PreActResNet20(shortcut="gated"), "Unknown shortcut 'gated'. Valid choices: 'identity'"),
    (lambda: kp.PreActResNet20(projection="b"), "Unknown projection 'b'. Valid choices: 'A', 'B', 'C'"),
    (lambda: kp.get_model("resnet165"), "Unknown arch 'resnet165'.*'resnet164'.*Did you mean"),
    (lambda: kp.PreActResNet20(classes=0), "`classes` must be >= 1, got 0"),
    (lambda: kp.PreActResNet20(input_shape=(3, 32, 3)), r"too small.*at least 4"),
    (lambda: kp.PreActResNet50(input_shape=(31, 64, 3)), r"too small.*at least 32"),
    (lambda: kp.PreActResNet20(input_shape=(32, 32)), "height, width, channels"),
    (lambda: kp.PreActResNet20(input_shape=(3, 32, 32)),
     r"looks channels-first; keras_preact's inputs are channels-last \(height, width, channels\): "
     r"use \(32, 32, 3\)"),
    (lambda: kp.PreActResNet20(zero_init_residul=True), r"Unknown option\(s\) \['zero_init_residul'\]"),
    (lambda: kp.PreActResNet20(pooling="avg"), "conflicts with include_top=True"),
    (lambda: kp.PreActResNet20(include_top=False, pooling="mean"), "Valid choices: None, 'avg', 'max'"),
    (lambda: kp.PreActResNet20(weights="imagenet"), "exists only for PreActResNet50, "),
    (lambda: kp.PreActResNet18(weights="imagenet"), "exists for depths 50, 101, 152 "),
    (lambda: kp.PreActResNet50(weights="imagenet", layout="paper"),
     "not layout='paper' \\(they are for layout='keras_applications'\\)"),
    (lambda: kp.PreActResNet50(weights="imagenet", classes=10), "use include_top=False"),
    (lambda: kp.PreActResNet50(layout="timm", stem="cifar"), "stem='cifar' networks"),
    (lambda: kp.PreActResNet50(layout="timm", placement="original"), "pre-activation layout"),
    (lambda: kp.PreActResNet50(layout="keras_applications", projection="C"),
     "drop projection='C'"),
    (lambda: kp.PreActResNet50(layout="tf_slim"), "Valid choices: 'paper', 'timm', "),
    (lambda: kp.PreActResNet20(weights="/nonexistent/w.weights.h5"), "file not found: '/nonexistent/w.weights.h5'"),
    (lambda: kp.PreActResNet18(stem="tiny"), "Unknown stem 'tiny'. Valid choices: 'imagenet', 'cifar'"),
    (lambda: kp.list_models("mnist"), "Unknown family 'mnist'"),
    (lambda: kp.PreActResNet20(classifier_activation="softmaks"), "use None \\(logits\\), 'softmax'"),
])
def test_bad_input_raises_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
