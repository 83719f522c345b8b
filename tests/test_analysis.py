"""Signal propagation (keras_preact.analysis): the paper's identities, exact to float32."""

import itertools
import os

import keras
import numpy as np
import pytest

import keras_preact
from keras_preact import analysis, convert
from keras_preact.units import OriginalUnit

from conftest import call_script, gradient, randomise_bn, run_script, to_np

SHAPE = (16, 16, 3)


def _batch(rng, n=6, shape=SHAPE):
    return rng.normal(0, 1, (n, *shape)).astype("float32"), rng.integers(0, 10, n)


def _stages(records):
    """The records of each stage without its first unit (which changes the shape)."""
    stages = {}
    for r in records:
        stages.setdefault(r["unit"].split("_")[0], []).append(r)
    return [rows[1:] for rows in stages.values()]


@pytest.mark.parametrize("training", [False, True])
def test_identity_shortcut_gradient_reaches_every_unit(rng, training):
    """Eq. 4 and 5 with F = 0: x_L = x_l and dE/dx_l = dE/dx_L within a stage."""
    model = keras_preact.PreActResNet20(input_shape=SHAPE, zero_init_residual=True,
                                        classifier_activation=None)
    randomise_bn(model, rng)
    records = analysis.propagation(model, *_batch(rng), training=training)
    assert [r["unit"] for r in records] == [f"stage{s}_unit{u}" for s in (1, 2, 3)
                                            for u in (1, 2, 3)]
    assert all(r["residual_norm"] == 0.0 for r in records)
    for rows in _stages(records):
        assert len({r["grad_norm"] for r in rows}) == 1 and rows[0]["grad_norm"] > 0
        assert len({r["input_norm"] for r in rows}) == 1
    assert all(r["clipped_fraction"] is None for r in records)  # f is the identity


def test_constant_scaling_multiplies_the_gradient_by_lambda(rng):
    """Eq. 8 with F = 0: h(x) = 0.5 x, so x_{l+1} = 0.5 x_l and dE/dx_l = 0.5 dE/dx_{l+1}."""
    model = keras_preact.PreActResNet32(
        input_shape=SHAPE, zero_init_residual=True, classifier_activation=None,
        shortcut={"name": "constant_scaling", "scale": 0.5})
    records = analysis.propagation(model, *_batch(rng), training=True)
    for rows in _stages(records):
        assert len(rows) == 4
        for a, b in itertools.pairwise(rows):
            assert a["grad_norm"] / b["grad_norm"] == 0.5
            assert b["input_norm"] / a["input_norm"] == 0.5


def _original_chain(zero_init=True):
    inputs = keras.Input(SHAPE)
    x = inputs
    for i in range(3):
        x = OriginalUnit(3, zero_init_residual=zero_init, name=f"unit{i + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def test_original_unit_clips_what_is_negative(rng):
    """Sec. 4.2 with F = 0: x_{l+1} = ReLU(x_l); the ReLU after the addition clips exactly
    the negative entries of x_l, and the gradient is the one Keras computes for the input."""
    model = _original_chain()
    x, y = _batch(rng)
    records = analysis.propagation(model, x, y)
    assert records[0]["clipped_fraction"] == np.mean(x < 0)
    assert 0.4 < records[0]["clipped_fraction"] < 0.6
    assert [r["clipped_fraction"] for r in records[1:]] == [0.0, 0.0]
    relu = np.maximum(x, 0).reshape(len(x), -1).astype("float64")
    assert records[1]["input_norm"] == np.mean(np.sqrt(np.sum(relu * relu, axis=1)))
    # ||dE/dx_1|| against the gradient of the whole model with respect to its input.
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    grad = to_np(gradient(lambda v: loss(y, model(v)), x)).reshape(len(x), -1).astype("float64")
    np.testing.assert_allclose(records[0]["grad_norm"],
                               np.mean(np.sqrt(np.sum(grad * grad, axis=1))), rtol=1e-6)


def test_dead_relu_channels_and_untouched_model(rng):
    """Two channels of the ReLU after conv1 get a negative BN output everywhere: 2 of the
    unit's 6 ReLU channels (3 there, 3 in f) are dead. Measuring changes no weight."""
    model = _original_chain(zero_init=False)
    unit = model.get_layer("unit2")
    bn = unit.branch[1]
    bn.gamma.assign(np.zeros(3, "float32"))
    bn.beta.assign(np.array([-1.0, -1.0, 1.0], "float32"))
    before = [to_np(w) for w in model.weights]
    x, y = _batch(rng)
    records = analysis.propagation(model, x, y, training=True)
    assert records[1]["dead_relu_fraction"] == 2 / 6
    assert all(np.array_equal(a, to_np(b)) for a, b in zip(before, model.weights))


def test_scanned_network_measures_as_unrolled(rng):
    model = keras_preact.PreActResNet20(input_shape=SHAPE, classifier_activation=None)
    x, y = _batch(rng)
    unrolled = analysis.propagation(model, x, y)
    scanned = analysis.propagation(convert.scan(model), x, y)
    assert [r["unit"] for r in scanned] == [r["unit"] for r in unrolled]
    for a, b in zip(scanned, unrolled):
        for key in ("input_norm", "residual_norm", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5)


def test_a_branching_model_is_refused():
    inputs = keras.Input((4,))
    outputs = keras.layers.Add()([keras.layers.Dense(4)(inputs), inputs])
    with pytest.raises(ValueError, match="form one chain"):
        analysis.propagation(keras.Model(inputs, outputs), np.zeros((1, 4)), [0])


@pytest.mark.tf_only
def test_analyze_script_writes_csv_and_figure(tmp_path, capsys):
    out = str(tmp_path / "prop")
    code, stdout, err = call_script("analyze", [
        "resnet20", "resnet20+shortcut=constant_scaling:scale=0.5+placement=original",
        "--data", "noise", "--batch", "4", "--out", out], capsys)
    assert code == 0, err
    assert "resnet20: 9 units" in stdout and "clipped by f = ReLU up to" in stdout
    series = analysis.read_csv(out + ".csv")
    assert list(series) == ["resnet20",
                            "resnet20+shortcut=constant_scaling:scale=0.5+placement=original"]
    assert len(series["resnet20"]) == 9 and series["resnet20"][0]["clipped_fraction"] is None
    assert os.path.getsize(out + ".png") > 0
    code, _, err = call_script("analyze", ["resnet20+shortcut=gating"], capsys)
    assert code == 2 and "Unknown shortcut" in err and len(err.strip().splitlines()) == 1


@pytest.mark.tf_only
def test_analyze_script_reads_a_saved_scanned_network(tmp_path):
    # A run directory's last.keras holds a scanned net on a CPU (TensorFlow's default form):
    # the script, in a fresh interpreter, must find keras_preact's layers to load it.
    keras.utils.set_random_seed(3)
    model = keras_preact.get_model("resnet20", classes=10, classifier_activation=None,
                                   scan_units=True)
    randomise_bn(model, np.random.default_rng(3))
    path = str(tmp_path / "net.keras")
    model.save(path)
    out = str(tmp_path / "prop")
    done = run_script("analyze.py", path, "--data", "noise", "--batch", "4", "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    images, labels = analysis.batch_of("noise", 4, model.input_shape[1:])
    expected = analysis.propagation(model, images, labels)  # (moving BN statistics)
    [measured] = analysis.read_csv(out + ".csv").values()
    assert [r["unit"] for r in measured] == [r["unit"] for r in expected]
    assert len(measured) == 9
    for a, b in zip(measured, expected):
        for key in ("input_norm", "residual_norm", "grad_norm", "dead_relu_fraction"):
            assert a[key] == pytest.approx(b[key], rel=1e-5)


def test_sources_with_the_same_name_keep_their_own_labels(tmp_path):
    runs = [tmp_path / grid / "resnet20-original-digits" / "seed0" for grid in ("a", "b")]
    for run in runs:
        run.mkdir(parents=True)
    parsed = [analysis.parse_source(str(runs[0])), analysis.parse_source(str(runs[1]) + "/"),
              analysis.parse_source("resnet20"), analysis.parse_source("resnet20")]
    assert analysis._unique_labels(parsed) == [
        "a/resnet20-original-digits/seed0", "b/resnet20-original-digits/seed0",
        "resnet20 (1)", "resnet20 (2)"]
    assert analysis._unique_labels(parsed[:3]) == [
        "a/resnet20-original-digits/seed0", "b/resnet20-original-digits/seed0", "resnet20"]
    assert analysis._unique_labels(parsed[2:3]) == ["resnet20"]


def test_a_model_option_given_twice_is_refused():
    with pytest.raises(ValueError, match=r"^'resnet20\+placement=original\+placement=full_preact' "
                       r"gives \+placement= twice: give each option once\.$"):
        analysis.parse_source("resnet20+placement=original+placement=full_preact")


@pytest.mark.tf_only
def test_analyze_script_replaces_existing_files_only_with_overwrite(tmp_path, capsys):
    out, csv, png = str(tmp_path / "report"), tmp_path / "report.csv", tmp_path / "report.png"
    csv.write_text("the user's")
    png.write_text("the user's")
    code, stdout, err = call_script("analyze", ["resnet20", "--out", out], capsys)
    assert code == 2 and not stdout
    assert err == (f"error: '{csv}' and '{png}' already exist: pass --overwrite to replace "
                   "them, or choose another --out.\n")
    assert csv.read_text() == png.read_text() == "the user's"
    code, _, err = call_script("analyze", ["resnet20", "--data", "noise", "--batch", "2",
                                           "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert list(analysis.read_csv(str(csv))) == ["resnet20"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_batch_beyond_the_test_set_or_the_memory_is_refused_before_measuring(
        tmp_path, capsys, monkeypatch):
    import re

    from keras_preact import _validation, data

    out = str(tmp_path / "prop")
    test_images = len(data.load_arrays("digits", "test")[0])
    monkeypatch.setattr(_validation, "available_memory", lambda: 2**40)  # (any machine)
    code, _, err = call_script("analyze", ["resnet20", "--batch", "1000", "--out", out], capsys)
    assert code == 2 and err == (f"error: --batch 1000 exceeds the {test_images} test images of "
                                 f"digits: use --batch {test_images} or less, or --data noise.\n")
    monkeypatch.setattr(_validation, "available_memory", lambda: 2**30)
    code, _, err = call_script("analyze", ["resnet20", "--data", "noise", "--batch", "100000",
                                           "--out", out], capsys)
    refused = re.fullmatch(r"error: --batch 100000 needs about [\d.]+ GiB of memory \(the "
                           r"activations and gradients of preact_resnet20\), more than the 1\.0 "
                           r"GiB available: use --batch (\d+) or less\.\n", err)
    assert code == 2 and refused, err
    model = keras_preact.get_model("resnet20")
    largest = int(refused[1])
    analysis.check_batch(model, largest)
    with pytest.raises(ValueError, match=f"use --batch {largest} or less"):
        analysis.check_batch(model, largest + 1)
    assert not os.path.exists(out + ".csv")
