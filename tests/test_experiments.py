"""The paper's experiments as grids of runs: the plan, a tiny grid trained, resumed, skipped."""

import dataclasses
import os
import pathlib
import re
import shlex

import pytest

from keras_preact import experiments, files
from keras_preact import config as cfg

from conftest import BACKEND, call_script, run_script, script_module

# The grids train in the JAX pass of CI, which runs beside the (longer) TensorFlow one.
in_jax_pass = pytest.mark.skipif(BACKEND != "jax", reason="trains in the JAX pass")


@pytest.mark.parametrize("name, runs", [("table1", 11), ("table2", 10), ("table3", 8),
                                        ("fig1", 2), ("fig6", 4)])
def test_each_grid_plans_its_runs_and_their_commands(tmp_path, name, runs):
    planned = experiments.plan(name, str(tmp_path), seeds=1)
    assert len(planned) == runs and len({r.config.model_dir for r in planned}) == runs
    parser = script_module("train").parser()
    for run in planned:
        command = experiments.train_command(run.config)
        argv = shlex.split(command)[2:]  # (keras-preact train)
        assert cfg.resolve_config(cfg.TrainConfig(**vars(parser.parse_args(argv)))) \
            == cfg.resolve_config(run.config)


# A valid value other than the default, for each field that is not a bool.
OTHER_VALUES = dict(
    model_dir="runs/other run", arch="resnet20", dataset="cifar100", placement="original",
    shortcut="constant_scaling:scale=0", projection="A", batch_size=64, lr=0.05, momentum=0.8,
    weight_decay=5e-4, warmup_iterations=40, iterations=1000, epochs=3, steps_per_epoch=5,
    mixed_precision="bfloat16", jit_compile="false", scan_units="on", steps_per_execution=4,
    seed=3, strategy="mirrored", cpu_replicas=2, eval_size=320, data_dir="/data/tfds",
    cifar_archive="/data/cifar-10-python.tar.gz", verbose="2", recipe="resnet-1k-layers")


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(cfg.TrainConfig)])
def test_train_command_renders_each_field_as_train_py_parses_it(name):
    usual = getattr(cfg.TrainConfig(model_dir="runs/x"), name)
    value = (not usual) if isinstance(usual, bool) else OTHER_VALUES[name]
    config = dataclasses.replace(cfg.TrainConfig(model_dir="runs/x"), **{name: value})
    argv = shlex.split(experiments.train_command(config))[2:]  # (keras-preact train)
    assert cfg.TrainConfig(**vars(script_module("train").parser().parse_args(argv))) == config


def test_train_command_writes_a_bool_given_to_a_choice_as_that_choice():
    config = cfg.TrainConfig(model_dir="runs/x", jit_compile=True, verbose=2)
    argv = shlex.split(experiments.train_command(config))[2:]
    parsed = script_module("train").parser().parse_args(argv)
    assert (parsed.jit_compile, parsed.verbose) == ("true", "2")


def test_table_figures_and_scaled_down_grids(tmp_path):
    table1 = experiments.plan("table1", str(tmp_path))
    assert [r.variant.paper_error() for r in table1] == [
        6.61, "fail", "fail", 12.35, "fail", 8.70, 9.81, 12.86, 6.91, 12.22, "fail"]
    folded = experiments.plan("table2", str(tmp_path), arch="resnet20", dataset="digits",
                              seeds=2)
    assert len(folded) == 5 * 2 and {r.config.arch for r in folded} == {"resnet20"}
    assert [r.variant.paper_error() for r in folded[::2]] == [6.61, 8.17, 7.84, 6.71, 6.37]
    with pytest.raises(ValueError, match="Unknown variant of fig1 'conv1x1'"):
        experiments.plan("fig1", str(tmp_path), variants=["conv1x1"])


ARGS = ["table2", "--arch", "resnet20", "--dataset", "digits", "--epochs", "2",
        "--steps-per-epoch", "2", "--batch-size", "16", "--warmup-iterations", "1", "--lr", "0.05",
        "--variants", "original", "full_preact"]


@in_jax_pass
def test_a_tiny_grid_resumes_and_skips_what_is_finished(tmp_path):
    out = str(tmp_path / "grid")
    args = [*ARGS, "--out", out]
    killed = run_script("experiment.py", *args, env={"KERAS_PREACT_FAULT": "epoch.end@1"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    first = os.path.join(out, "resnet20-original-digits", "seed0")
    assert not os.path.exists(os.path.join(first, "results.json"))
    again = run_script("experiment.py", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{first}: resuming from epoch 1 of 2" in again.stdout
    assert "resnet20-full_preact-digits/seed0: starting epoch 1 of 2" in again.stdout
    results = pathlib.Path(out, "results.md").read_text()
    rows = re.findall(r"^\| resnet20 (\w+) digits \| resnet110 \w+ cifar10 \| ([\d.]+) \| "
                      r"(?:fail )?([\d.]+) \| 1 \|$", results, re.MULTILINE)
    measured = {p: files.read_json(os.path.join(out, f"resnet20-{p}-digits", "seed0",
                                                "results.json"))["test_error"]
                for p in ("original", "full_preact")}
    assert rows == [("original", "6.61", f"{measured['original']:.2f}"),
                    ("full_preact", "6.37", f"{measured['full_preact']:.2f}")]
    assert "Budget: 2 epochs of 2 steps, warm-up 1 iterations at 0.01, learning rate 0.05, " \
        "batch 16, 1 seed(s)" in results
    assert os.path.getsize(os.path.join(out, "curves.png")) > 0
    done = run_script("experiment.py", *args)
    assert done.returncode == 0 and done.stdout.count("holds a finished run") == 2


@in_jax_pass
def test_a_diverged_run_is_a_failure_not_retried(tmp_path):
    out = str(tmp_path / "grid")
    options = dict(arch="resnet20", dataset="digits", epochs=1, steps_per_epoch=3,
                   batch_size=16, variants=["original"], lr=1e12, warmup=False, verbose=0)
    lines = []
    rows = experiments.run_grid("table2", out, log=lines.append, **options)
    assert any("The loss became NaN or infinite" in line for line in lines)
    assert rows[0]["diverged"] == 1 and not rows[0]["errors"]
    assert "| resnet20 original digits | resnet110 original cifar10 | 6.61 | fail - (1 diverged) | 1 |" \
        in pathlib.Path(out, "results.md").read_text()
    lines = []
    experiments.run_grid("table2", out, log=lines.append, **options)
    assert any("diverged before; not retried" in line for line in lines)


def test_a_grid_never_replaces_a_file_it_did_not_write(tmp_path):
    out = tmp_path / "grid"
    out.mkdir()
    (out / "results.md").write_text("the user's notes")
    with pytest.raises(files.RefusedError, match="'results.md' in --out .* was not written by "
                       "keras_preact: move them away"):
        experiments.run_grid("table2", str(out), arch="resnet20", dataset="digits", epochs=1,
                             steps_per_epoch=3, batch_size=16, variants=["original"])
    assert sorted(os.listdir(out)) == ["results.md"]
    assert (out / "results.md").read_text() == "the user's notes"


def test_a_grid_refuses_the_folders_it_cannot_use_in_its_own_terms(tmp_path, capsys):
    out = str(tmp_path / "grid")
    first, second = [r.config for r in experiments.plan(
        "table2", out, arch="resnet20", dataset="digits", epochs=2, steps_per_epoch=2,
        batch_size=16, warmup_iterations=1, lr=0.05, variants=["original", "full_preact"])]
    other = cfg.resolve_config(dataclasses.replace(second, lr=0.1))  # an earlier grid's run
    os.makedirs(second.model_dir)
    files.write_json(os.path.join(second.model_dir, "config.json"), {
        "format": files.RUN_FORMAT, "identity": other.identity(), "resolved": {}})
    code, stdout, err = call_script("experiment", [*ARGS, "--out", out], capsys)
    assert code == 2, err
    assert err == (f"error: '{second.model_dir}', the folder of resnet20 full_preact digits seed 0, "
                   "holds a run with other settings (differs in: lr): run the grid "
                   "with another --out, or move that folder away to train the run again.\n")
    assert not os.path.exists(first.model_dir)  # refused before anything trained
    os.remove(os.path.join(second.model_dir, "config.json"))
    with open(os.path.join(second.model_dir, "notes.txt"), "w") as f:
        f.write("the user's")
    code, _, err = call_script("experiment", [*ARGS, "--out", out], capsys)
    assert code == 2 and "holds 'notes.txt', which keras_preact cannot resume as this run: " \
        "run the grid with another --out" in err and len(err.splitlines()) == 1, err
    assert "--model-dir" not in err and "--overwrite" not in err
