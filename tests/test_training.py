"""Training: the paper's schedule and decay, run directories, resuming, strategies, learning."""

import csv
import dataclasses
import json
import os
import pathlib
import re

import numpy as np
import pytest

pytestmark = pytest.mark.tf_only

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from keras_preact import config as cfg  # noqa: E402
from keras_preact import files, rundir, training  # noqa: E402

from conftest import DIGITS, run_script  # noqa: E402


def resolved(**kwargs):
    return cfg.resolve_config(cfg.TrainConfig(model_dir="x", **kwargs))


def test_paper_schedule_values():
    config = resolved(arch="resnet110")
    s = cfg.schedule_for(config, steps_per_epoch=390)
    assert s.total_iterations == 64_000 and config.batch_size == 128
    rate = training.learning_rate(s)
    lr = {i: float(rate(i)) for i in (0, 399, 400, 31_999, 32_000, 47_999, 48_000, 63_999)}
    assert lr == pytest.approx({0: 0.01, 399: 0.01, 400: 0.1, 31_999: 0.1, 32_000: 0.01,
                                47_999: 0.01, 48_000: 0.001, 63_999: 0.001})
    no_warmup = training.learning_rate(cfg.schedule_for(dataclasses.replace(config, warmup=False), 390))
    assert float(no_warmup(0)) == pytest.approx(0.1)
    # --iterations rescales the milestones (and the warm-up) proportionally.
    short = cfg.schedule_for(dataclasses.replace(config, iterations=6400), 390)
    assert short.total_iterations == 6400 and short.milestones == (3200, 4800)
    assert short.warmup_iterations == 40 and short.boundaries == (40, 3200, 4800)
    # --warmup-iterations sets the warm-up's length instead of scaling it.
    set_ = cfg.schedule_for(dataclasses.replace(config, iterations=300, warmup_iterations=40), 22)
    assert set_.boundaries == (40, 150, 225) and set_.epochs == 14
    assert set_.values == pytest.approx((0.01, 0.1, 0.01, 0.001))
    imagenet = resolved(arch="resnet200")
    s = cfg.schedule_for(imagenet, steps_per_epoch=5004)
    assert imagenet.batch_size == 256 and s.total_iterations == 90 * 5004
    assert s.milestones == (30 * 5004, 60 * 5004) and imagenet.eval_size == 224


def test_l2_regulariser_is_the_papers_coupled_decay():
    reg = training.coupled_l2(1e-4)
    w = tf.Variable(np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype("float32"))
    with tf.GradientTape() as tape:
        penalty = reg(w)
    # SGD with weight decay 1e-4 adds 1e-4 * w to the gradient (Torch's weightDecay).
    np.testing.assert_allclose(tape.gradient(penalty, w).numpy(), 1e-4 * w.numpy(), rtol=1e-5)
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 3, kernel_regularizer=reg)])
    assert len(model.losses) == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(arch="resnet165"), "Unknown arch"),
    (dict(dataset="mnist"), "Unknown dataset 'mnist'. Valid choices: 'cifar10', 'cifar100'"),
    (dict(placement="pre"), "Unknown placement"),
    (dict(shortcut="gate"), "Unknown shortcut"),
    (dict(strategy="tpu"), "Unknown strategy 'tpu'. Valid choices: 'auto', 'mirrored'"),
    (dict(arch="resnet50", dataset="cifar10"), "does not match dataset"),
    (dict(epochs=3, iterations=100), "not both"),
    # The silent wrong values and late failures: all refused up front.
    (dict(batch_size=0), r"`batch_size` must be >= 1, got 0"),
    (dict(momentum=-3.0), r"`momentum` must be a finite number in \[0.0, 1.0\), got -3.0"),
    (dict(momentum=float("nan")), r"`momentum` must be a finite number"),
    (dict(lr=float("inf")), r"`lr` must be a finite number in \(0.0, inf\), got inf"),
    (dict(weight_decay=-1e-4), r"`weight_decay` must be a finite number in \[0.0, inf\)"),
    (dict(cpu_replicas=-1), r"`cpu_replicas` must be >= 1, got -1"),
    (dict(cpu_replicas=0), r"`cpu_replicas` must be >= 1, got 0"),
    (dict(steps_per_epoch=0), r"`steps_per_epoch` must be >= 1"),
    (dict(seed=-1), r"`seed` must be >= 0"),
    (dict(eval_size=320), "--eval-size applies to imagenet2012"),
    (dict(arch="resnet18", eval_size=256), "Unknown eval size '256'. Valid choices: '224', '320'"),
    (dict(verbose=3), "Unknown verbose '3'"),
    (dict(dataset="digits", cifar_archive="x.tar.gz"), "--cifar-archive applies to cifar10"),
    (dict(shortcut="dropout:rate=half"), "number or true/false"),
    (dict(warmup_iterations=0), r"`warmup_iterations` must be >= 1, got 0"),
    (dict(warmup=False, warmup_iterations=40), "--no-warmup turns off: give one of them"),
    (dict(iterations=300, warmup_iterations=300), "leaves none of the run's 300 iterations"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolved(**kwargs)


def test_shortcut_is_one_canonical_spec():
    a = resolved(shortcut="constant_scaling")
    b = resolved(shortcut="constant_scaling:scale=0.5")
    assert a.shortcut == b.shortcut == {"name": "constant_scaling", "scale": 0.5,
                                        "scale_residual": False}
    assert a.identity() == b.identity()  # the same run, however it is spelled


def test_a_field_added_later_leaves_earlier_runs_resumable():
    # Runs recorded before --warmup-iterations existed have no such key in their identity.
    assert "warmup_iterations" not in resolved().identity()
    assert resolved(warmup_iterations=40).identity()["warmup_iterations"] == 40


# -- the reference run ------------------------------------------------------------------
def _results(run_dir):
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


def test_learning_on_digits_and_what_the_run_says(digits_run):
    run_dir, result = digits_run
    results = _results(run_dir)
    assert results["test_error"] <= 5.0, results  # at least 95% test accuracy
    out = result.stdout
    # One block at the start ...
    assert "arch       resnet20: full_preact, shortcut identity, projection B; 272,282 " \
           "trainable parameters" in out
    assert "digits: 1,438 training and 359 test images, 10 classes, input 32x32x3" in out
    assert "batch 64, 22 steps per epoch, 6 epochs = 132 iterations" in out
    assert ("learning rate 0.01 (warm-up), 0.1 from iteration 1, 0.01 from iteration 66, "
            "0.001 from iteration 99") in out
    assert "strategy none (1 replica), precision float32" in out
    assert f"{run_dir}: starting epoch 1 of 6" in out
    # ... a line per epoch when stdout is not a terminal (no progress-bar control bytes) ...
    assert "\r" not in out and "\x08" not in out and out.count("22/22 - ") == 6
    # ... and at the end the error, where the outputs are, and what to do next.
    assert f"test error {results['test_error']:.2f}% (the paper reports no figure" in out
    assert f"keras-preact export --model {run_dir}" in out
    assert "sha256" not in out and len(results["weights_sha256"]) == 64
    config = files.read_json(os.path.join(run_dir, "config.json"))
    assert config["format"] == rundir.RUN_FORMAT and config["steps_per_epoch"] == 22
    with open(os.path.join(run_dir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and float(rows[-1]["loss"]) < float(rows[0]["loss"])
    for name in ("best.keras", "last.keras", "curves.png"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0
    checkpoints = files.read_json(os.path.join(run_dir, "checkpoints.json"))
    assert checkpoints["last"]["epoch"] == 6 and checkpoints["best"]["epoch"] <= 6
    assert sorted(os.listdir(os.path.join(run_dir, "backup", "chief0"))) == [
        "epoch-00005.json", "epoch-00005.weights.h5", "epoch-00006.json", "epoch-00006.weights.h5"]
    model = keras.saving.load_model(os.path.join(run_dir, "last.keras"), safe_mode=True)
    assert model.output_shape == (None, 10)
    assert not [f for f in os.listdir(run_dir) if ".tmp-" in f or f.startswith(".lock")]


def test_kill_during_the_backup_write_then_resume_equals_uninterrupted(digits_run, tmp_path):
    """SIGKILL in the middle of writing the epoch-3 backup; the rerun resumes from
    epoch 2 by itself and ends with exactly the reference run's weights."""
    ref_dir, _ = digits_run
    run_dir = str(tmp_path / "run")
    killed = run_script("train.py", *DIGITS, "--model-dir", run_dir,
                        env={"KERAS_PREACT_FAULT": "backup.weights@3"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    backup = os.path.join(run_dir, "backup", "chief0")
    assert [n for n in os.listdir(backup) if n.startswith(".epoch-00003.tmp-")]  # the torn write
    assert rundir.BackupStore(backup).generations()[0]["_epoch"] == 2

    result = run_script("train.py", *DIGITS, "--model-dir", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from epoch 2 of 6" in result.stdout
    results = _results(run_dir)
    assert results["resumed_from_epoch"] == 2 and results["iterations"] == 6 * 22
    assert results["weights_sha256"] == _results(ref_dir)["weights_sha256"]
    assert not [n for n in os.listdir(backup) if ".tmp-" in n]
    with open(os.path.join(run_dir, "log.csv")) as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(6))

    # A finished run is left as it is (no TensorFlow needed to say so).
    results_path = pathlib.Path(run_dir, "results.json")
    before = results_path.read_text()
    again = run_script("train.py", *DIGITS, "--model-dir", run_dir)
    assert again.returncode == 0 and "holds a finished run" in again.stdout
    assert results_path.read_text() == before
    changed = run_script("train.py", *DIGITS, "--lr", "0.05", "--model-dir", run_dir)
    assert changed.returncode == 2 and "differs in: lr" in changed.stderr
    assert "--overwrite" in changed.stderr and len(changed.stderr.strip().splitlines()) == 1


# -- resume state: damaged backups, identity, the last.keras fallback -------------------
def _tiny_compiled():
    # (named: a resume state is keyed by the weights' names, which a network of ours fixes)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")],
                             name="tiny")
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    return model


def _fit_once(model):
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    model.fit(x, np.zeros(8, "int64"), epochs=1, batch_size=4, verbose=0)


def _weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


IDENTITY = {"arch": "tiny", "lr": 0.1}


def test_backup_generations_survive_damage(tmp_path):
    store = rundir.BackupStore(str(tmp_path / "backup" / "chief0"))
    model = _tiny_compiled()
    _fit_once(model)
    store.save(model, 1, IDENTITY, 1.5)
    epoch1 = _weights(model)
    _fit_once(model)
    store.save(model, 2, IDENTITY, 3.0)
    epoch2 = _weights(model)
    _fit_once(model)
    store.save(model, 3, IDENTITY, 4.5)
    assert [m["_epoch"] for m in store.generations()] == [3, 2]  # two generations kept

    def restored(expect_warnings):
        fresh, messages = _tiny_compiled(), []
        epoch, seconds = store.restore(fresh, IDENTITY, log=messages.append)
        assert len(messages) == expect_warnings, messages
        return epoch, seconds, fresh, messages

    weights3, meta3 = (os.path.join(store.dir, f"epoch-00003.{e}") for e in ("weights.h5", "json"))
    with open(weights3, "r+b") as f:  # a torn weights file
        f.truncate(os.path.getsize(weights3) // 2)
    epoch, seconds, fresh, messages = restored(1)
    assert (epoch, seconds) == (2, 3.0) and "epoch 3" in messages[0] and "truncated" in messages[0]
    for a, b in zip(_weights(fresh), epoch2):
        np.testing.assert_array_equal(a, b)

    with open(meta3, "w") as f:  # garbage metadata
        f.write("{not json")
    assert restored(1)[0] == 2
    os.remove(os.path.join(store.dir, "epoch-00002.weights.h5"))  # and the previous one gone
    epoch, _, _, messages = restored(2)
    assert epoch == 0 and "missing" in messages[1]
    del epoch1

    # A backup of another configuration is refused, never resumed silently.
    model = _tiny_compiled()
    store.save(model, 4, IDENTITY, 0.0)
    with pytest.raises(files.RefusedError, match="different configuration .*differs in: lr"):
        store.restore(_tiny_compiled(), {**IDENTITY, "lr": 0.05})


def test_a_cluster_resumes_from_the_newest_epoch_every_worker_holds(tmp_path, monkeypatch):
    """A worker killed at an epoch's end may lack that epoch's backup: every worker then
    resumes from the epoch before (Keras' JAX cluster variables name the workers)."""
    model = _tiny_compiled()
    stores = {w: rundir.BackupStore(str(tmp_path / "backup" / w)) for w in ("chief0", "worker1")}
    for epoch in (1, 2, 3):
        _fit_once(model)
        stores["chief0"].save(model, epoch, IDENTITY, float(epoch))
        if epoch < 3:
            stores["worker1"].save(model, epoch, IDENTITY, float(epoch))
            held = _weights(model)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    assert rundir.cluster_workers() == {"chief0", "worker1"} and not rundir.is_chief()
    assert rundir.worker_id() == "worker1"
    assert rundir.common_epoch(str(tmp_path), sorted(rundir.cluster_workers()), IDENTITY) == 2
    fresh = _tiny_compiled()
    assert stores["chief0"].restore(fresh, IDENTITY, upto=2) == (2, 2.0)
    for a, b in zip(_weights(fresh), held):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(stores["worker1"].dir, "epoch-00002.weights.h5"), "r+b") as f:
        f.truncate(10)  # torn: no epoch both hold (the chief kept 3 and 2): start over
    assert rundir.common_epoch(str(tmp_path), ["chief0", "worker1"], IDENTITY) == 0


def test_a_backup_of_0_1_is_restored_by_position(tmp_path):
    """keras_preact 0.1 wrote model.save_weights (no "keys" in the metadata): it still
    resumes, into the form it was saved from; the next backup is keyed by name."""
    store = rundir.BackupStore(str(tmp_path / "backup" / "chief0"))
    model = _tiny_compiled()
    _fit_once(model)
    weights, meta = (os.path.join(store.dir, f"epoch-00001.{e}") for e in ("weights.h5", "json"))
    os.makedirs(store.dir)
    model.save_weights(weights)
    files.write_json(meta, {"format": rundir.BACKUP_FORMAT, "epoch": 1, "identity": IDENTITY,
                            "weights": os.path.basename(weights), "sha256": files.sha256(weights),
                            "bytes": os.path.getsize(weights), "train_seconds": 1.0})
    # The run is built in the form it was saved from: as its config.json records it, and
    # unrolled for a run from before scanning (no record).
    assert rundir.positional_form(str(tmp_path)) == "off"
    files.write_json(str(tmp_path / "config.json"), {"scan_units": "on"})
    assert rundir.positional_form(str(tmp_path)) == "on"
    fresh = _tiny_compiled()
    assert store.restore(fresh, IDENTITY) == (1, 1.0)
    for a, b in zip(_weights(fresh), _weights(model)):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations.numpy()) == 2
    store.save(fresh, 2, IDENTITY, 2.0)
    assert store.generations()[0]["keys"] == "unrolled"
    assert rundir.positional_form(str(tmp_path)) == "on"  # (the 0.1 generation is still kept)
    store.save(fresh, 3, IDENTITY, 3.0)
    assert rundir.positional_form(str(tmp_path)) is None  # every backup keyed by name


def test_resume_falls_back_to_last_keras_then_starts_over(tmp_path):
    run_dir = str(tmp_path / "run")
    config = cfg.resolve_config(cfg.TrainConfig(model_dir=run_dir, arch="resnet20",
                                                dataset="digits"))
    backup = os.path.join(run_dir, "backup", "chief0")
    model = _tiny_compiled()
    _fit_once(model)
    rundir.BackupStore(backup).save(model, 1, config.identity(), 1.0)
    _fit_once(model)
    model.save(os.path.join(run_dir, "last.keras"))
    files.write_json(os.path.join(run_dir, "checkpoints.json"), {"last": {"epoch": 2}})
    with open(os.path.join(backup, "epoch-00001.weights.h5"), "wb") as f:
        f.write(b"garbage")
    with open(os.path.join(run_dir, "log.csv"), "w") as f:
        f.write("epoch,loss\n0,2.0\n1,1.5\n2,1.2\n")
    messages = []
    fresh = _tiny_compiled()
    epoch, _, rows = training._restore(fresh, config, "resume", True, None, messages.append)
    assert epoch == 2 and "resuming from last.keras (epoch 2)" in messages[-1]
    for a, b in zip(_weights(fresh), _weights(model)):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(run_dir, "log.csv")) as f:
        assert f.read() == "epoch,loss\n0,2.0\n1,1.5\n"  # the epochs after the state go
    assert rows == [{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 1.5}]

    os.remove(os.path.join(run_dir, "last.keras"))
    messages.clear()
    assert training._restore(_tiny_compiled(), config, "resume", True, None,
                             messages.append)[0] == 0
    assert "starting the run over from epoch 0" in messages[-1]
    with open(os.path.join(run_dir, "log.csv")) as f:
        assert f.read() == "epoch\n"


def test_nan_loss_stops_before_anything_of_it_is_saved(tmp_path):
    """Epoch 1 is finite, epoch 2 feeds NaN: training stops, nothing NaN is saved, and
    the message says what is true."""
    model = _tiny_compiled()
    x = np.ones((2 * 8, 4), "float32")
    x[8:] = np.nan
    y = np.zeros(2 * 8, "int64")
    store = rundir.BackupStore(str(tmp_path / "backup"))
    callbacks = [training.StopOnNaN(), training.Backup(store, IDENTITY, 0.0),
                 training.Checkpoints(str(tmp_path))]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(training.TrainingDiverged) as diverged:
        model.fit(ds, epochs=2, steps_per_epoch=2, callbacks=callbacks, verbose=0, shuffle=False)
    assert diverged.value.args == (2, 0)  # epoch 2, its first batch
    last = keras.saving.load_model(str(tmp_path / "last.keras"), safe_mode=True)
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(w.value))) for w in last.weights)
    assert store.generations()[0]["_epoch"] == 1  # the backup is still the end of epoch 1
    config = cfg.resolve_config(cfg.TrainConfig(model_dir=str(tmp_path), arch="resnet20"))
    said = training._diverged_message(config, 2, 0)
    assert "last.keras holds epoch 1, the last finished one" in said and "--lr (this run: 0.1)" in said
    empty = dataclasses.replace(config, model_dir=str(tmp_path / "none"))
    assert "no epoch had finished, so there is no checkpoint" in training._diverged_message(empty, 1, 3)


# -- the run directory: ownership, identity, one writer ----------------------------------------
def test_overwrite_removes_only_what_keras_preact_wrote(tmp_path):
    """By record, at any depth: the user's files in the folders a run creates stay; a run
    without a record (an older version's) is refused, naming what would be lost."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = cfg.resolve_config(cfg.TrainConfig(model_dir=str(run_dir), arch="resnet20",
                                                dataset="digits", overwrite=True))
    other = dataclasses.replace(config, lr=0.05)
    ours = ("config.json", "log.csv", "last.keras", "backup/chief0/epoch-00001.json",
            "tensorboard/chief0/train/events.out.tfevents.1.host.7.0.v2")
    record = rundir.open_record(str(run_dir), "new")
    record.add(*(str(run_dir / name) for name in ours))
    for name in ours:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("ours")
    files.write_json(str(run_dir / "config.json"),
                     {"format": rundir.RUN_FORMAT, "identity": other.identity()})
    mine = ("notes.txt", "sub/x", "backup/my.txt", "backup/chief0/mine.txt",
            "tensorboard/note.txt", "tensorboard/chief0/train/mine.txt")
    for name in mine:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("the user's")
    assert rundir.check(config)[0] == "overwrite"
    kept = rundir.remove_run(str(run_dir))
    assert kept == ["backup/chief0/mine.txt", "backup/my.txt", "notes.txt", "sub/",
                    "tensorboard/chief0/train/mine.txt", "tensorboard/note.txt"]
    assert sorted(f for f in files.tree_entries(str(run_dir)) if not f.endswith("/")) == sorted(
        mine)
    for name in mine:
        assert (run_dir / name).read_text() == "the user's"
    # Killed after the marker went but before the record: --overwrite finishes the job.
    record.save()
    assert rundir.check(config)[0] == "overwrite"
    with pytest.raises(files.RefusedError, match="holds no keras_preact run"):
        rundir.check(dataclasses.replace(config, overwrite=False))
    assert rundir.remove_run(str(run_dir)) == kept and not (run_dir / ".owned-chief0.json").exists()

    # A run without a record: --overwrite cannot tell its files from the user's.
    (run_dir / "config.json").write_text(json.dumps({"format": rundir.RUN_FORMAT,
                                                     "identity": other.identity()}))
    with pytest.raises(files.RefusedError, match="keeps no record of its files .*'backup/', "
                       "'config.json', 'notes.txt', 'sub/', 'tensorboard/' would be lost"):
        rundir.check(config)
    # Nor can it with a damaged record; resuming such a run sets the record aside.
    (run_dir / ".owned-chief0.json").write_text("{torn")
    with pytest.raises(files.RefusedError, match="owned-chief0.json is damaged"):
        rundir.check(config)
    said = []
    assert not rundir.open_record(str(run_dir), "resume", said.append).complete
    assert "set aside as" in said[0] and not (run_dir / ".owned-chief0.json").exists()


USER_FILES = ("notes.txt", "backup/my.txt", "backup/chief0/mine.txt", "tensorboard/note.txt",
              "tensorboard/chief0/a.txt", "tensorboard/chief0/train/b.txt",
              "tensorboard/chief0/validation/c.txt", "mine/d.txt")


def _copy_run(ref_dir, tmp_path):
    import shutil

    run_dir = str(tmp_path / "run")
    shutil.copytree(ref_dir, run_dir)
    return run_dir


def test_overwrite_through_the_script_keeps_the_users_files_at_every_level(digits_run, tmp_path):
    run_dir = _copy_run(digits_run[0], tmp_path)
    for name in USER_FILES:
        os.makedirs(os.path.dirname(os.path.join(run_dir, name)), exist_ok=True)
        pathlib.Path(run_dir, name).write_text("the user's")
    result = run_script("train.py", *DIGITS[:6], "--iterations", "22", "--verbose", "2",
                        "--overwrite", "--model-dir", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in USER_FILES:
        assert pathlib.Path(run_dir, name).read_text() == "the user's"
    assert ("kept 'backup/chief0/mine.txt', 'backup/my.txt', 'mine/', 'notes.txt', "
            "'tensorboard/chief0/a.txt', 'tensorboard/chief0/train/b.txt' and 2 more, which "
            "keras_preact did not write") in result.stdout
    # Nothing of the previous run is left: one epoch's backup, the new event files only.
    assert sorted(os.listdir(os.path.join(run_dir, "backup", "chief0"))) == [
        "epoch-00001.json", "epoch-00001.weights.h5", "mine.txt"]
    events = [n for n in files.tree_entries(os.path.join(run_dir, "tensorboard"))
              if "tfevents" in n]
    assert len(events) == 2 and all(n in rundir.read_records(run_dir)[0][0].entries
                                    for n in (f"tensorboard/{e}" for e in events))
    assert rundir.read_records(run_dir)[1] is None  # the record is complete


def test_a_damaged_log_is_set_aside_and_sigterm_says_rerunning_resumes(digits_run, tmp_path):
    """The run resumes from epoch 5 (its epoch-6 state and results removed) with a log.csv
    that is not text: it is set aside, saying so, and the log goes on. SIGTERM after epoch
    6's backup ends the run in one line saying that the same command resumes it; it does."""
    run_dir = _copy_run(digits_run[0], tmp_path)
    for name in ("results.json", "backup/chief0/epoch-00006.json"):
        os.remove(os.path.join(run_dir, name))
    log_path = pathlib.Path(run_dir, "log.csv")
    log_path.write_bytes(bytes(range(128, 248)))
    stopped = run_script("train.py", *DIGITS, "--model-dir", run_dir,
                         env={"KERAS_PREACT_FAULT": "epoch.end@1:TERM"})
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert stopped.stderr.splitlines()[-1] == (
        "terminated: run the same command again to resume from the last finished epoch")
    assert "Traceback" not in stopped.stderr
    assert "resuming from epoch 5 of 6" in stopped.stdout
    (warning,) = [line for line in stopped.stdout.splitlines() if "log.csv is damaged" in line]
    assert "(it is not text); set aside as log.damaged-" in warning
    assert "goes on from its 0 intact rows" in warning
    (aside,) = [n for n in os.listdir(run_dir) if n.startswith("log.damaged-")]
    assert pathlib.Path(run_dir, aside).read_bytes() == bytes(range(128, 248))
    again = run_script("train.py", *DIGITS, "--model-dir", run_dir)
    assert again.returncode == 0 and "resuming from epoch 6 of 6" in again.stdout
    rows, trouble = rundir.read_log(str(log_path))
    assert trouble is None and [r["epoch"] for r in rows] == [5]


def test_a_torn_log_is_trimmed_never_glued(tmp_path):
    path = str(tmp_path / "log.csv")
    rundir.write_log(path, [{"epoch": e, "loss": 2.0 - e / 10, "val_accuracy": e / 10}
                            for e in range(5)])
    whole = pathlib.Path(path).read_text()
    pathlib.Path(path).write_text(whole[:whole.index("\n3,") + 6])  # epoch 3's row cut
    said = []
    rows = rundir.resume_log(path, 4, said.append)  # resumed at the end of epoch 4
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert "(its last line is cut off); set aside as log.damaged-" in said[0]
    log = training.EpochLog(path, rows)
    log.on_epoch_end(4, {"loss": 1.5, "val_accuracy": 0.75})
    assert pathlib.Path(path).read_text() == "".join(whole.splitlines(True)[:4]) + \
        "4,1.5,0.75\n"
    assert rundir.read_log(path) == ([*rows, {"epoch": 4, "loss": 1.5, "val_accuracy": 0.75}],
                                     None)
    for damaged, problem in (("epoch,loss\n0,1\n0,2\n", "line 3 holds epoch 0, after epoch 0"),
                             ("epoch,loss\n0,1,2\n", "line 2 is not 2 numbers"),
                             ("loss\n1\n", "its header is not an epoch log's")):
        pathlib.Path(path).write_text(damaged)
        assert rundir.read_log(path)[1] == problem
    # A metric some epochs did not log is left empty, and read back as absent.
    rundir.write_log(path, [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5, "lr": 0.1}])
    assert rundir.read_log(path) == ([{"epoch": 0, "loss": 1.0},
                                      {"epoch": 1, "loss": 0.5, "lr": 0.1}], None)


def test_sigint_says_rerunning_resumes_too(capsys):
    from conftest import script_module

    cli = script_module("common")

    def interrupted():
        raise KeyboardInterrupt

    assert cli.run(interrupted, resume="run it again") == 130
    assert capsys.readouterr().err == "interrupted: run it again\n"


def test_the_next_commands_can_be_pasted(tmp_path):
    import shlex

    config = cfg.resolve_config(cfg.TrainConfig(model_dir=str(tmp_path / "my runs" / "it's"),
                                                arch="resnet20", dataset="digits", plot=False))
    said = []
    training._report_end(config, {"test_error": 1.0, "paper_error": None, "arch": "resnet20",
                                  "placement": "full_preact", "dataset": "digits"}, True,
                         said.append)
    (plot,) = [line for line in said if "keras-preact plot" in line]
    (export,) = [line for line in said if "keras-preact export" in line]
    assert shlex.split(plot.split(maxsplit=1)[1])[2] == config.model_dir
    assert shlex.split(export)[-1] == config.model_dir


def test_another_workers_lock_and_temporaries_are_not_content(tmp_path):
    """The workers of a cluster open one folder at once: what the chief has written so far
    (its lock, a probe it is about to remove) does not make the folder someone else's."""
    import socket

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    host = socket.gethostname().replace("-", "_")
    (run_dir / ".lock-worker0").write_text("process 1")
    (run_dir / f".probe.tmp-{host}-{os.getpid()}-0123abcd").write_text("")
    config = cfg.resolve_config(cfg.TrainConfig(model_dir=str(run_dir), arch="resnet20",
                                                dataset="digits"))
    assert rundir.check(config)[0] == "new"
    # Nor do the folders another worker opens before the chief writes config.json ...
    for folder in ("backup", "tensorboard", "workers"):
        (run_dir / folder / "worker1").mkdir(parents=True)
    (run_dir / "workers" / "worker1" / "log.csv").write_text("epoch,loss\n")
    files.Record(str(run_dir), rundir.record_name("worker1")).add(
        str(run_dir / "workers" / "worker1" / "log.csv"))
    assert rundir.check(config)[0] == "new"
    # ... but this worker's own leftovers, or anything else in them, do.
    (run_dir / "backup" / "chief0").mkdir()
    with pytest.raises(files.RefusedError, match="holds no keras_preact run .* 'backup/'"):
        rundir.check(config)
    (run_dir / "backup" / "chief0").rmdir()
    (run_dir / "tensorboard" / "notes.txt").write_text("")
    with pytest.raises(files.RefusedError, match="not empty: 'tensorboard/'"):
        rundir.check(config)


def test_a_run_of_an_older_keras_preact_is_recognised(tmp_path):
    run_dir = tmp_path / "old"
    (run_dir / "backup" / "chief0").mkdir(parents=True)
    (run_dir / "backup" / "chief0" / "latest.weights.h5").write_text("old BackupAndRestore")
    config = cfg.resolve_config(cfg.TrainConfig(model_dir=str(run_dir), arch="resnet20",
                                                dataset="digits"))
    files.write_json(str(run_dir / "config.json"), {"identity": config.identity(),
                                                    "resolved": {}})  # no "format"
    with pytest.raises(files.RefusedError, match="a run of an older keras_preact, which this "
                       "version cannot resume: move it away"):
        rundir.check(config)
    with pytest.raises(files.RefusedError, match="no record of its files .*'backup/', "
                       "'config.json' would be lost"):
        rundir.check(dataclasses.replace(config, overwrite=True))


def test_deleted_config_json_the_backup_keeps_the_identity(tmp_path):
    run_dir = str(tmp_path / "run")
    config = cfg.resolve_config(cfg.TrainConfig(model_dir=run_dir, arch="resnet20",
                                                dataset="digits"))
    rundir.BackupStore(os.path.join(run_dir, "backup", "chief0")).save(
        _tiny_compiled(), 1, config.identity(), 1.0)
    assert rundir.check(config)[0] == "resume"  # config.json is rewritten by the run
    with pytest.raises(files.RefusedError, match="differs in: lr"):
        rundir.check(dataclasses.replace(config, lr=0.05))
    with open(os.path.join(run_dir, "config.json"), "w") as f:  # garbage
        f.write("")
    assert rundir.check(config)[0] == "resume"  # the backup confirms the run


@pytest.mark.parametrize("setup, args, message", [
    ("foreign", ["--overwrite"], "holds no keras_preact run (no config.json) but is not empty: "
     "'notes.txt', 'sub/' would be lost with --overwrite"),
    ("foreign", [], "is not empty: 'notes.txt', 'sub/'. Choose a new or empty folder"),
    ("garbage_config", [], "config.json is damaged: not valid JSON (Expecting value: line 1 "
     "column 1 (char 0)), and no backup confirms which run this is"),
    ("file", [], "is a file, not a folder"),
    ("under_file", [], "lies under"),
])
def test_model_dir_problems_are_one_line_before_any_write(tmp_path, capsys, setup, args, message):
    from conftest import call_script

    target = tmp_path / "d"
    if setup == "foreign":
        (target / "sub").mkdir(parents=True)
        (target / "notes.txt").write_text("mine")
    elif setup == "garbage_config":
        target.mkdir()
        (target / "config.json").write_text("")
    elif setup == "file":
        target.write_text("x")
    elif setup == "under_file":
        (tmp_path / "f").write_text("x")
        target = tmp_path / "f" / "d"
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code, _, err = call_script("train", [*DIGITS, "--model-dir", str(target), *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("args, message", [
    (["--momentum", "-3"], "`momentum` must be a finite number in [0.0, 1.0), got -3.0"),
    (["--lr", "inf"], "`lr` must be a finite number"),
    (["--momentum", "nan"], "`momentum` must be a finite number"),
    (["--batch-size", "0"], "`batch_size` must be >= 1, got 0"),
    (["--cpu-replicas", "-1"], "`cpu_replicas` must be >= 1, got -1"),
    (["--arch", "resnet21"], "Unknown arch 'resnet21'"),
    (["--eval-size", "300"], "invalid choice: 300"),
    (["--no-warmup", "--warmup-iterations", "40"], "give one of them"),
])
def test_bad_arguments_fail_before_the_run_directory_exists(tmp_path, capsys, args, message):
    from conftest import call_script

    code, _, err = call_script("train", [*DIGITS, "--model-dir", str(tmp_path / "run"), *args],
                               capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "run")


def test_a_second_writer_is_refused_naming_the_first(tmp_path, capsys):
    from conftest import call_script

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with rundir.lock(str(run_dir)):
        code, _, err = call_script("train", [*DIGITS, "--model-dir", str(run_dir)], capsys)
    assert code == 2 and f"is in use by process {os.getpid()} on" in err, err
    assert os.listdir(run_dir) == []  # the lock is gone with its holder


def test_read_only_model_dir(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o555)
    # Root writes anywhere: drop the capability that lets it (util-linux's setpriv).
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    result = run_script("train.py", *DIGITS, "--model-dir", str(locked / "run"), prefix=prefix)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == (f"error: Cannot write to --model-dir '{locked}/run': "
                                     f"permission denied on '{locked}'. Choose a folder you "
                                     "can write to.")


# -- strategies ------------------------------------------------------------------------------
def test_mirrored_strategy_on_two_cpus(tmp_path):
    run_dir = str(tmp_path / "run")
    result = run_script("train.py", "--arch", "resnet20", "--dataset", "digits", "--batch-size",
                        "128", "--epochs", "2", "--strategy", "mirrored", "--cpu-replicas", "2",
                        "--no-plot", "--model-dir", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "strategy MirroredStrategy (2 replicas)" in result.stdout
    assert _results(run_dir)["replicas"] == 2
    with open(os.path.join(run_dir, "log.csv")) as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses[1] < losses[0]
    # What is saved holds BN moving statistics that training updated (replica 0's copy).
    saved = keras.saving.load_model(os.path.join(run_dir, "last.keras"), safe_mode=True)
    variances = [keras.ops.convert_to_numpy(w.value) for w in saved.weights if "moving_variance" in w.path]
    assert variances and all(np.all(np.isfinite(v)) and not np.allclose(v, 1.0) for v in variances)
    bad = run_script("train.py", "--arch", "resnet20", "--dataset", "digits", "--batch-size", "63",
                     "--strategy", "mirrored", "--cpu-replicas", "2", "--model-dir",
                     str(tmp_path / "b"))
    assert bad.returncode == 2 and "not divisible by the 2 replicas" in bad.stderr
    assert not os.path.exists(tmp_path / "b")


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_compat_fix_falls_back_only_on_the_bugs_own_error():
    from keras_preact import compat

    def bug(*args):
        raise ValueError("Invalid reduction dimension 0 for input with 0 dimensions")

    def other(*args):
        raise ValueError("something else")

    fixed = compat.with_fallback(bug, lambda *a: ("fixed", a), compat.REDUCE_SYMPTOM, "probe")
    assert fixed(1, 2) == ("fixed", (1, 2)) and "probe" in compat.USED
    with pytest.raises(ValueError, match="something else"):
        compat.with_fallback(other, lambda *a: "fixed", compat.REDUCE_SYMPTOM, "probe")(1)
    assert compat.with_fallback(lambda x: x + 1, None, compat.REDUCE_SYMPTOM, "probe")(1) == 2
    compat.check_trainer(compat._trainer())  # this Keras has the code the fix wraps

    class Changed:
        TensorFlowTrainer = object

    with pytest.raises(Exception, match="does not fit Keras .* no reduce_per_replica"):
        compat.check_trainer(Changed)


def test_multi_worker_two_processes_on_loopback(tmp_path):
    """Two workers (TF_CONFIG) train a few steps and end with identical weights."""
    import subprocess

    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    run_dir = str(tmp_path / "run")
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(run_script(
            "train.py", "--arch", "resnet20", "--dataset", "digits", "--batch-size", "128",
            "--epochs", "2", "--strategy", "multi_worker", "--no-plot", "--model-dir", run_dir,
            env={"TF_CONFIG": tf_config}, wait=False, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE))
    try:
        outputs = [p.communicate(timeout=500) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(err[-2500:] for _, err in outputs)
    chief, worker = _results(run_dir), _results(os.path.join(run_dir, "workers", "worker1"))
    # Gradients are all-reduced, so the trained weights agree exactly; BN moving statistics are
    # per replica unless --sync-bn, as in the paper, and the chief saves its own.
    assert chief["trainable_weights_sha256"] == worker["trainable_weights_sha256"]
    assert chief["replicas"] == 2 and chief["iterations"] == worker["iterations"] == 2 * 11
    assert not [err for _, err in outputs if "ran out of data" in err]
    # Keras 3.15 needs both fixes of compat.py; when Keras fixes keras-team/keras#20585
    # the reduce fix stops being used, this fails, and the fix can go.
    assert chief["compat_fixes"] == ["reduce_per_replica", "symbolic_build"]
    assert os.path.exists(os.path.join(run_dir, "workers", "worker1", "log.csv"))
    assert sorted(os.listdir(os.path.join(run_dir, "backup"))) == ["worker0", "worker1"]
    with open(os.path.join(run_dir, "log.csv")) as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses[1] < losses[0]
    assert re.search(r"test error \d+\.\d\d%", outputs[0][0])
