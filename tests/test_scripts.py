"""The command lines: fast and complete --help, one-line errors, plots that read."""

import os

import pytest

from conftest import ROOT, SCRIPTS, call_script, python, script_module

SCRIPT_NAMES = ("train", "export", "benchmark", "plot", "summary", "model_table", "analyze", "experiment")

@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_help_loads_no_backend(name):
    args = ["infer", "--help"] if name == "benchmark" else ["--help"]
    result = python("-X", "importtime", os.path.join(SCRIPTS, f"{name}.py"), *args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "keras_preact" in imported
    assert not imported & {"tensorflow", "keras", "jax", "matplotlib"}, sorted(imported)
    assert not [line for line in result.stderr.splitlines() if not line.startswith("import time:")]


def _actions(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
        elif not isinstance(action, argparse._HelpAction):
            yield parser, action


@pytest.mark.parametrize("name", [n for n in SCRIPT_NAMES if n != "model_table"])
def test_every_option_is_explained(name):
    parser = script_module(name).parser()
    for _, action in _actions(parser):
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        if action.choices and action.metavar:  # a named choice lists its values in the help
            assert all(str(c) in action.help for c in action.choices), action.dest
    if name == "train":
        groups = [g.title for g in parser._action_groups]
        assert groups[2:] == ["model", "data", "optimisation", "distribution and precision",
                              "output"]
        text = parser.format_help()
        assert "--lr LR learning rate after the warm-up (default: 0.1)" in " ".join(text.split())
        assert "resnet1001" in text and "exclusive_gating" in text


def test_train_options_are_the_config_fields_and_the_readme_table_is_theirs(capsys):
    """train.py's options are TrainConfig's declarations: one option per field, parsed into
    that field; the README's table is generated from them (a stale table fails here)."""
    import dataclasses

    from keras_preact.train import config as cfg

    parser = script_module("train").parser()
    dests = {a.dest: a for _, a in _actions(parser)}
    assert set(dests) == {f.name for f in dataclasses.fields(cfg.TrainConfig)}
    assert dests["warmup"].option_strings == ["--no-warmup"]  # (a switch names its effect)
    args = parser.parse_args(["--model-dir", "m", "--no-warmup", "--shortcut", "dropout",
                              "--lr", "0.05", "--eval-size", "320", "--sync-bn"])
    assert cfg.TrainConfig(**vars(args)) == cfg.TrainConfig(
        model_dir="m", warmup=False, shortcut="dropout", lr=0.05, eval_size=320, sync_bn=True)
    with open(os.path.join(ROOT, "README.md")) as f:
        assert cfg.options_table() in f.read(), (
            "README's table of train.py's options is stale: paste the output of "
            "`python scripts/model_table.py --train-options`")
    code, out, err = call_script("model_table", ["--train-options"], capsys)
    assert code == 0 and out.strip() == cfg.options_table(), err


def test_experiment_takes_train_options_as_declared():
    from keras_preact.train import config as cfg

    module = script_module("experiment")
    args = module.parser().parse_args(["table2", "--out", "o", "--lr", "0.05",
                                       "--warmup-iterations", "20"])
    assert (args.arch, args.dataset, args.lr) == (None, None, 0.05)  # (the grid's own arch)
    assert args.warmup_iterations == 20 and args.batch_size is cfg.TrainConfig.batch_size


@pytest.mark.parametrize("name, argv, message", [
    ("benchmark", ["infer", "--arch", "resnet20", "--threads", "-1"],
     "argument --threads: must be an integer >= 1, got -1"),
    ("benchmark", ["infer", "--export-dir", "/nonexistent"], "holds no manifest.json"),
    ("summary", ["resnet21", "--no-summary"], "Unknown arch 'resnet21'"),
    ("summary", ["resnet20", "--classes", "0"], "must be an integer >= 1, got 0"),
    ("plot", ["/nonexistent/run"], "not a run directory (no log.csv yet): /nonexistent/run"),
    ("train", ["--model-dir", "x", "--strategy", "tpu"], "invalid choice: 'tpu'"),
])
def test_errors_are_one_line(name, argv, message, capsys):
    code, _, err = call_script(name, argv, capsys)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err


def _fake_run(path, arch, errors, lr=0.1):
    from keras_preact import files

    os.makedirs(path)
    identity = {"arch": arch, "lr": lr, "placement": "full_preact",
                "shortcut": {"name": "identity"}}
    files.write_json(os.path.join(path, "config.json"), {
        "format": "keras_preact.run/1", "steps_per_epoch": 10, "identity": identity,
        "resolved": identity})
    with open(os.path.join(path, "log.csv"), "w") as f:
        f.write("epoch,loss,val_accuracy\n")
        for epoch, error in enumerate(errors):
            f.write(f"{epoch},{2.0 / (epoch + 1)},{1 - error / 100}\n")


def test_curves_read_at_one_percent_and_runs_are_told_apart(tmp_path):
    from keras_preact import plotting

    _fake_run(str(tmp_path / "a"), "resnet20", [90.0, 20.0, 5.0, 1.0])
    _fake_run(str(tmp_path / "b"), "resnet20", [90.0, 30.0, 8.0, 3.0], lr=0.05)
    _fake_run(str(tmp_path / "c"), "resnet110", [95.0, 50.0, 6.0])
    fig = plotting.make_figure([str(tmp_path / n) for n in "abc"])
    error_axis = fig.axes[1]
    assert error_axis.get_ylim() == (0.0, 20.0)  # the paper's 0-20%: a 1% error reads
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "resnet20 full_preact (lr=0.1)", "resnet20 full_preact (lr=0.05)", "resnet110 full_preact"]
    # A run above 20% widens the axis to show it.
    _fake_run(str(tmp_path / "d"), "resnet20", [90.0, 60.0, 40.0])
    assert plotting.make_figure([str(tmp_path / "d")]).axes[1].get_ylim() == (0.0, 50.0)
    # Runs with equal settings are told apart by their folder.
    _fake_run(str(tmp_path / "e"), "resnet20", [90.0, 20.0, 5.0, 1.0])
    labels = [t.get_text() for t in plotting.make_figure([str(tmp_path / "a"), str(tmp_path / "e")])
              .legends[0].get_texts()]
    assert labels == ["resnet20 full_preact (a)", "resnet20 full_preact (e)"]
    # A grid of 11 variants (Table 1): 11 colours (the default cycle repeats after 10).
    grid = []
    for i in range(11):
        _fake_run(str(tmp_path / f"g{i}"), "resnet20", [90.0, 10.0 + i], lr=0.01 * (i + 1))
        grid.append(str(tmp_path / f"g{i}"))
    from matplotlib.colors import to_rgba

    lines = plotting.make_figure(grid).axes[1].get_lines()
    assert len({to_rgba(line.get_color()) for line in lines}) == 11
    import matplotlib.pyplot as plt

    plt.close("all")


def test_a_warm_up_as_long_as_the_run_is_refused_in_iterations_and_in_epochs(tmp_path, capsys):
    run = str(tmp_path / "run")
    digits = ["--arch", "resnet20", "--dataset", "digits", "--batch-size", "64",
              "--warmup-iterations", "1000", "--model-dir", run]
    # (digits: 1,438 training images, 22 steps of 64; with --epochs known once it is loaded)
    for budget, total in ((["--iterations", "22"], 22), (["--epochs", "1"], 22),
                          (["--epochs", "2", "--steps-per-epoch", "3"], 6)):
        code, out, err = call_script("train", [*digits, *budget], capsys)
        assert code == 2 and err == (f"error: --warmup-iterations 1000 leaves none of the run's "
                                     f"{total} iterations at --lr: warm up for fewer.\n"), err
    assert not os.path.exists(run)


def test_a_batch_that_does_not_fit_in_memory_is_refused_before_any_work(tmp_path, capsys,
                                                                         monkeypatch):
    import json

    from keras_preact import _validation, benchmark

    assert 0 < _validation.available_memory() <= os.sysconf("SC_PHYS_PAGES") * os.sysconf(
        "SC_PAGE_SIZE")
    monkeypatch.setattr(_validation, "available_memory", lambda: 2**30)
    image = 12 * 32 * 32 * 3  # (an int64 draw and its float32 copy)
    largest = (2**30 - image) // (image + 6 * 64 * 4 * 32 * 32)
    benchmark.check_batch((32, 32, 3), largest)
    with pytest.raises(ValueError, match=f"use --batch {largest} or less"):
        benchmark.check_batch((32, 32, 3), largest + 1)
    with open(tmp_path / "manifest.json", "w") as f:
        json.dump({"arch": "resnet20"}, f)
    code, _, err = call_script("benchmark", ["infer", "--export-dir", str(tmp_path)], capsys)
    assert code == 2 and err == (f"error: {tmp_path / 'manifest.json'} names no input shape: "
                                 "export again with keras-preact export.\n")
    with open(tmp_path / "manifest.json", "w") as f:  # read for the input shape only
        json.dump({"input": {"shape": [None, 32, 32, 3]}}, f)
    code, out, err = call_script("benchmark", ["infer", "--export-dir", str(tmp_path),
                                               "--batch", "100000"], capsys)
    assert code == 2 and not out
    assert err == ("error: --batch 100000 needs about 149.9 GiB of memory (32x32x3 images and "
                   f"activations), more than the 1.0 GiB available: use --batch {largest} or "
                   "less.\n")
    code, out, err = call_script("benchmark", ["train", "--arch", "resnet20",
                                               "--steps", "10000000"], capsys)
    steps = (2**30 - 8 * 6 * 64 * 4 * 32 * 32) // (8 * image)
    assert code == 2 and not out and err.startswith("error: --steps 10000000 needs about ")
    assert err.endswith(f"use --steps {steps} or less.\n") and len(err.splitlines()) == 1


def test_plot_replaces_an_existing_file_only_with_overwrite(tmp_path, capsys):
    _fake_run(str(tmp_path / "a"), "resnet20", [90.0, 20.0, 5.0])
    out = tmp_path / "curves.png"
    out.write_text("the user's")
    code, _, err = call_script("plot", [str(tmp_path / "a"), "--out", str(out)], capsys)
    assert code == 2 and err == (f"error: '{out}' already exists: pass --overwrite to replace "
                                 "it, or choose another --out.\n")
    assert out.read_text() == "the user's"
    code, _, err = call_script("plot", [str(tmp_path / "a"), "--out", str(out), "--overwrite"],
                               capsys)
    assert code == 0, err
    assert out.read_bytes()[:4] == b"\x89PNG"
    code, _, err = call_script("plot", [str(tmp_path / "a"), "--out", str(tmp_path / "a")],
                               capsys)
    assert code == 2 and err == f"error: '{tmp_path / 'a'}' is a folder: choose another --out.\n"
