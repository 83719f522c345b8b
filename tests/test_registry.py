"""Registry, README table and the scripts."""

import os
import subprocess
import sys

import pytest

import keras_preact as kp
from keras_preact.shortcuts import parse_shortcut

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_list_models_and_info():
    names = kp.list_models()
    for required in ("resnet110", "resnet164", "resnet1001", "resnet200", "resnet18_cifar"):
        assert required in names
    assert kp.list_models("imagenet") == ["resnet18", "resnet34", "resnet50", "resnet101",
                                           "resnet152", "resnet200", "resnet18_cifar"]
    info = kp.model_info("resnet1001")
    assert info["paper_error"]["cifar10"]["full_preact"] == 4.92
    assert info["paper_error"]["cifar100"]["full_preact"] == 22.71
    assert info["family"] == "cifar" and info["form"] == "bottleneck"
    assert info["stage_units"] == (111, 111, 111) and info["input_shape"] == (32, 32, 3)
    assert kp.model_info("resnet164")["paper_error"]["cifar10"]["full_preact"] == 5.46
    assert kp.model_info("resnet200")["paper_error"]["imagenet2012"]["full_preact"] == 20.7
    assert kp.model_info("resnet200")["dataset"] == "imagenet2012"


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


def _script(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", args[0]), *args[1:]],
                          capture_output=True, text=True, env=env, timeout=300)


def test_summary_script():
    result = _script("summary.py", "resnet20", "--shortcut", "exclusive_gating:gate_bias=-6")
    assert result.returncode == 0, result.stderr
    assert "stage3_unit3 (FullPreActUnit)" in result.stdout
    assert "params: 272,282 (default configuration)" in result.stdout
    bad = _script("summary.py", "resnet21", "--no-summary")
    assert bad.returncode == 2 and "Unknown arch 'resnet21'" in bad.stderr


def test_model_table_script():
    result = _script("model_table.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == kp.registry.markdown_table()
