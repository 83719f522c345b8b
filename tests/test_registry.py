"""Registry, README table and the scripts."""

import os

import pytest

import keras_preact as kp
from keras_preact.shortcuts import parse_shortcut

from conftest import ROOT, call_script


def test_list_models_and_info():
    names = kp.list_models()
    for required in ("resnet110", "resnet164", "resnet1001", "resnet200", "resnet18_cifar"):
        assert required in names
    assert kp.list_models("imagenet") == ["resnet18", "resnet34", "resnet50", "resnet101",
                                           "resnet152", "resnet200", "resnet18_cifar",
                                           "resnet18_cifar_option_a", "resnet18_pytorch_cifar"]
    info = kp.model_info("resnet1001")
    assert info["paper_error"]["cifar10"]["full_preact"] == 4.92
    assert info["paper_error"]["cifar100"]["full_preact"] == 22.71
    assert info["family"] == "cifar" and info["form"] == "bottleneck"
    assert info["stage_units"] == (111, 111, 111) and info["input_shape"] == (32, 32, 3)
    assert kp.model_info("resnet164")["paper_error"]["cifar10"]["full_preact"] == 5.46
    assert kp.model_info("resnet200")["paper_error"]["imagenet2012"]["full_preact"] == 20.7
    assert kp.model_info("resnet200")["dataset"] == "imagenet2012"


def test_table1_figures_by_shortcut():
    from keras_preact import config as cfg
    from keras_preact import registry

    def paper(**kwargs):
        return cfg.paper_error(cfg.resolve_config(cfg.TrainConfig(
            model_dir="x", arch="resnet110", **{"placement": "original", **kwargs})))

    assert paper() == 6.61 == kp.model_info("resnet110")["paper_error"]["cifar10"]["original"]
    assert paper(shortcut="constant_scaling:scale=0.5,scale_residual=true") == 12.35
    assert paper(shortcut="constant_scaling") == registry.FAIL  # (0.5 / 1)
    assert paper(shortcut="constant_scaling:scale=0") == registry.FAIL  # a plain net
    assert [paper(shortcut=f"exclusive_gating:gate_bias={b}") for b in (0, -3, -5, -6, -7)] \
        == [registry.FAIL] * 3 + [8.70, 9.81]
    assert paper(shortcut="shortcut_only_gating:gate_bias=0") == 12.86
    assert paper(shortcut="shortcut_only_gating") == 6.91
    assert paper(shortcut="conv1x1") == 12.22 and paper(shortcut="dropout") == registry.FAIL
    assert paper(shortcut="exclusive_gating:gate_bias=-2.5") is None  # not a row
    assert paper(shortcut="conv1x1", placement="full_preact") is None  # Table 1 is (a) only
    assert paper(shortcut="conv1x1", projection="A") is None
    from keras_preact.training import _error_line

    assert _error_line({"test_error": 25.0, "paper_error": registry.FAIL, "arch": "resnet110",
                        "placement": "original", "dataset": "cifar10"}) == (
        "test error 25.00% (paper: fail, i.e. above 20%, for resnet110 original on cifar10)")


def test_get_model_passes_options():
    model = kp.get_model("resnet20", classes=100, placement="original", shortcut="conv1x1")
    assert model.output_shape == (None, 100)
    assert isinstance(model.get_layer("stage1_unit1"), kp.units.OriginalUnit)
    cifar18 = kp.get_model("resnet18_cifar")
    assert cifar18.input_shape == (None, 32, 32, 3) and cifar18.name == "preact_resnet18_cifar"


def test_readme_table_is_generated_from_the_registry():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert kp.registry.markdown_table() in readme, (
        "README's model table is stale: paste the output of `python scripts/model_table.py`")


def test_parse_shortcut():
    assert parse_shortcut("identity") == {"name": "identity"}
    assert parse_shortcut("constant_scaling:scale=0.5,scale_residual=true") == {
        "name": "constant_scaling", "scale": 0.5, "scale_residual": True}
    assert parse_shortcut("exclusive_gating:gate_bias=-7")["gate_bias"] == -7.0
    with pytest.raises(ValueError, match="NAME:key=value"):
        parse_shortcut("dropout:0.3")
    with pytest.raises(ValueError, match="number or true/false"):
        parse_shortcut("dropout:rate=half")
    with pytest.raises(ValueError, match="Valid options: rate"):
        parse_shortcut("dropout:p=0.3")


def test_summary_script(capsys):
    code, out, err = call_script("summary", ["resnet20", "--shortcut",
                                             "exclusive_gating:gate_bias=-6"], capsys)
    assert code == 0, err
    assert "stage3_unit3 (FullPreActUnit)" in out
    assert "params: 272,282 (default configuration)" in out
    code, _, err = call_script("summary", ["resnet21", "--no-summary"], capsys)
    assert code == 2 and "Unknown arch 'resnet21'" in err


def test_model_table_script(capsys):
    code, out, err = call_script("model_table", [], capsys)
    assert code == 0, err
    assert out.strip() == kp.registry.markdown_table()


LAZY = """
import sys
import keras_preact
assert "keras" not in sys.modules, "import keras_preact loaded Keras"
assert keras_preact.list_models()[0] == "resnet20" and "keras" not in sys.modules
import keras
import importlib
importlib.reload(keras_preact)  # keras is imported now: the layers register at once
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
print(type(model.get_layer("stage1_unit1")).__name__)
"""


def test_import_is_light_and_saved_models_still_load(tmp_path):
    """``import keras_preact`` loads no backend; with Keras imported, keras.saving.load_model
    finds the layers."""
    from conftest import python

    path = str(tmp_path / "m.keras")
    kp.PreActResNet20().save(path)
    result = python("-c", LAZY, path, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "FullPreActUnit"
    fresh = python("-c", "import keras, keras_preact, sys; "
                   "keras.saving.load_model(sys.argv[1], safe_mode=True); print('ok')", path,
                   cwd=ROOT)
    assert fresh.stdout.strip() == "ok", fresh.stderr[-2000:]


def test_a_shortcut_option_given_twice_is_refused(capsys):
    with pytest.raises(ValueError, match=r"^'scale' is given twice in "
                       r"'constant_scaling:scale=0.5,scale=0.7': give it once\.$"):
        parse_shortcut("constant_scaling:scale=0.5,scale=0.7")
    with pytest.raises(ValueError, match="the name goes before the ':' only"):
        parse_shortcut("constant_scaling:name=dropout")
    code, _, err = call_script("train", ["--model-dir", "x", "--shortcut",
                                         "exclusive_gating:gate_bias=-6, gate_bias =0"], capsys)
    assert code == 2 and err == ("error: 'gate_bias' is given twice in "
                                 "'exclusive_gating:gate_bias=-6, gate_bias =0': give it once.\n")


def test_a_run_shorter_than_an_epoch_is_one_short_epoch():
    from keras_preact import config as cfg

    def schedule(**kwargs):
        return cfg.schedule_for(cfg.resolve_config(cfg.TrainConfig(
            model_dir="x", arch="resnet20", dataset="digits", **kwargs)), 22)

    short = schedule(iterations=2)
    assert (short.steps_per_epoch, short.epochs, short.total_iterations) == (2, 1, 2)
    assert short.describe(22) == "2 steps per epoch (of 22), 1 epoch = 2 iterations"
    assert schedule(iterations=300).describe(22) == "22 steps per epoch, 14 epochs = 300 iterations"
    assert schedule(epochs=1).describe(22) == "22 steps per epoch, 1 epoch = 22 iterations"


def _readme_rows(header):
    """The rows of the README table whose header row starts with ``header``, as cells."""
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_readme_placement_and_shortcut_tables_match_the_catalog():
    """The README's tables of Fig. 4 and Fig. 2 name every variant of the catalog, with its
    figure, its layer class and (shortcuts) exactly its options and their defaults."""
    from keras_preact.layers.shortcuts import SHORTCUTS
    from keras_preact.layers.units import PLACEMENTS
    from keras_preact.vocab import catalog

    rows = _readme_rows("| `placement` |")
    assert [r[0].split("`")[1] for r in rows] == list(catalog.PLACEMENT_FIGURES)
    for name, figure, _, cls in rows:
        name = name.split("`")[1]
        assert (figure, cls) == (catalog.PLACEMENT_FIGURES[name], f"`{PLACEMENTS[name].__name__}`")
    rows = _readme_rows("| `shortcut` |")
    assert [r[0].split("`")[1] for r in rows] == list(catalog.SHORTCUT_OPTIONS)
    for name, figure, _, options in rows:
        name = name.split("`")[1]
        assert figure == catalog.SHORTCUT_FIGURES[name] == SHORTCUTS[name].figure
        assert options == ", ".join(f"`{k}={v}`" for k, v in catalog.SHORTCUT_OPTIONS[name].items())
