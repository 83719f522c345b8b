"""Training: the paper's schedule and decay, run directories, resuming, strategies, learning."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.tf_only

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from keras_preact import training  # noqa: E402

from conftest import DIGITS, ROOT, TRAIN  # noqa: E402


def run_train(*args, timeout=600):
    return subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def test_paper_schedule_values():
    config = training.resolve_config(training.TrainConfig(model_dir="x", arch="resnet110"))
    total, schedule = training.schedule_for(config, steps_per_epoch=390)
    assert total == 64_000 and config.batch_size == 128
    lr = {i: float(schedule(i)) for i in (0, 399, 400, 31_999, 32_000, 47_999, 48_000, 63_999)}
    assert lr == pytest.approx({0: 0.01, 399: 0.01, 400: 0.1, 31_999: 0.1, 32_000: 0.01,
                                47_999: 0.01, 48_000: 0.001, 63_999: 0.001})
    no_warmup = training.schedule_for(training.dataclasses.replace(config, warmup=False), 390)[1]
    assert float(no_warmup(0)) == pytest.approx(0.1)
    # --iterations rescales the milestones (and the warm-up) proportionally.
    short = training.dataclasses.replace(config, iterations=6400)
    total, s = training.schedule_for(short, 390)
    assert total == 6400 and s.boundaries == [3200, 4800] and s.warmup_steps == 40
    imagenet = training.resolve_config(training.TrainConfig(model_dir="x", arch="resnet200"))
    total, s = training.schedule_for(imagenet, steps_per_epoch=5004)
    assert imagenet.batch_size == 256 and total == 90 * 5004 and s.boundaries == [30 * 5004, 60 * 5004]


def test_l2_regulariser_is_the_papers_coupled_decay():
    reg = training.coupled_l2(1e-4)
    w = tf.Variable(np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype("float32"))
    with tf.GradientTape() as tape:
        penalty = reg(w)
    # SGD with weight decay 1e-4 adds 1e-4 * w to the gradient (Torch's weightDecay).
    np.testing.assert_allclose(tape.gradient(penalty, w).numpy(), 1e-4 * w.numpy(), rtol=1e-5)
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 3, kernel_regularizer=reg)])
    assert len(model.losses) == 1


def test_config_errors():
    for kwargs, message in [
        (dict(arch="resnet165"), "Unknown arch"),
        (dict(dataset="mnist"), "Unknown dataset 'mnist'. Valid choices: 'cifar10', 'cifar100'"),
        (dict(placement="pre"), "Unknown placement"),
        (dict(shortcut="gate"), "Unknown shortcut"),
        (dict(strategy="tpu"), "Unknown strategy 'tpu'. Valid choices: 'auto', 'mirrored'"),
        (dict(arch="resnet50", dataset="cifar10"), "does not match dataset"),
        (dict(epochs=3, iterations=100), "not both"),
    ]:
        with pytest.raises(ValueError, match=message):
            training.resolve_config(training.TrainConfig(model_dir="x", **kwargs))


@pytest.fixture
def reference_run(digits_run):
    """An uninterrupted, deterministic digits run through scripts/train.py (conftest)."""
    return digits_run


def test_learning_on_digits(reference_run):
    run_dir, result = reference_run
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    assert results["test_error"] <= 5.0, results  # at least 95% test accuracy
    assert f"test error {results['test_error']:.2f}%" in result.stdout
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["steps_per_epoch"] == 22 and config["resolved"]["dataset"] == "digits"
    with open(os.path.join(run_dir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and float(rows[-1]["loss"]) < float(rows[0]["loss"])
    for name in ("best.keras", "last.keras", "curves.png"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0
    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    model = keras.saving.load_model(os.path.join(run_dir, "last.keras"), safe_mode=True)
    assert model.output_shape == (None, 10)
    assert not [f for f in os.listdir(run_dir) if f.startswith(".tmp-")]
    out = os.path.join(os.path.dirname(run_dir), "compare.png")
    plot = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plot.py"), run_dir, run_dir,
                           "--out", out], capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, plot.stderr
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_kill_and_resume_equals_uninterrupted(reference_run, tmp_path):
    ref_dir, _ = reference_run
    run_dir = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, TRAIN, *DIGITS, "--model-dir", run_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    meta = os.path.join(run_dir, "backup", "chief0", "training_metadata.json")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if training.backup_epoch(os.path.dirname(meta)) >= 2:
                break
        except ValueError:  # caught the metadata file mid-write
            pass
        time.sleep(0.2)
    time.sleep(2.0)  # into the next epoch
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    result = run_train(*DIGITS, "--model-dir", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    assert results["resumed_from_epoch"] >= 2 and results["iterations"] == 6 * 22
    resumed = keras.saving.load_model(os.path.join(run_dir, "last.keras"), safe_mode=True)
    reference = keras.saving.load_model(os.path.join(ref_dir, "last.keras"), safe_mode=True)
    for a, b in zip(resumed.weights, reference.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a.value),
                                      keras.ops.convert_to_numpy(b.value), err_msg=a.path)

    changed = run_train(*DIGITS, "--lr", "0.05", "--model-dir", run_dir)
    assert changed.returncode == 2 and "differs in: lr" in changed.stderr and "--overwrite" in changed.stderr


def test_mirrored_strategy_on_two_cpus(tmp_path):
    run_dir = str(tmp_path / "run")
    result = run_train("--arch", "resnet20", "--dataset", "digits", "--batch-size", "128",
                       "--epochs", "2", "--strategy", "mirrored", "--cpu-replicas", "2",
                       "--no-plot", "--verbose", "2", "--model-dir", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(run_dir, "results.json")) as f:
        assert json.load(f)["replicas"] == 2
    with open(os.path.join(run_dir, "log.csv")) as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses[1] < losses[0]
    # What is saved holds BN moving statistics that training updated (replica 0's copy).
    saved = keras.saving.load_model(os.path.join(run_dir, "last.keras"), safe_mode=True)
    variances = [keras.ops.convert_to_numpy(w.value) for w in saved.weights if "moving_variance" in w.path]
    assert variances and all(np.all(np.isfinite(v)) and not np.allclose(v, 1.0) for v in variances)
    bad = run_train("--arch", "resnet20", "--dataset", "digits", "--batch-size", "63",
                    "--strategy", "mirrored", "--cpu-replicas", "2", "--model-dir", str(tmp_path / "b"))
    assert bad.returncode == 2 and "not divisible by the 2 replicas" in bad.stderr


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_compat_fix_is_guarded_to_affected_versions():
    from keras_preact import compat

    assert compat.needed() == (compat.AFFECTED[0] <= compat.keras_version() < compat.AFFECTED[1])


def test_multi_worker_two_processes_on_loopback(tmp_path):
    """Two workers (TF_CONFIG) train a few steps and end with identical weights."""
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    run_dir = str(tmp_path / "run")
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, TRAIN, "--arch", "resnet20", "--dataset", "digits", "--batch-size", "128",
             "--epochs", "2", "--strategy", "multi_worker", "--no-plot", "--verbose", "2",
             "--model-dir", run_dir],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, TF_CONFIG=tf_config, TF_CPP_MIN_LOG_LEVEL="3")))
    try:
        outputs = [p.communicate(timeout=500) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    import re

    found = [re.search(r"final weights sha256 ([0-9a-f]{64}), trainable weights sha256 ([0-9a-f]{64})",
                       out).groups() for out, _ in outputs]
    # Gradients are all-reduced, so the trained weights agree exactly; BN moving statistics are
    # per replica unless --sync-bn, as in the paper, and the chief saves its own.
    digests = [trainable for _, trainable in found]
    assert digests[0] == digests[1]
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    assert results["replicas"] == 2 and results["trainable_weights_sha256"] == digests[0]
    assert os.path.exists(os.path.join(run_dir, "workers", "worker1", "log.csv"))
    assert sorted(os.listdir(os.path.join(run_dir, "backup"))) == ["worker0", "worker1"]
    with open(os.path.join(run_dir, "log.csv")) as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses[1] < losses[0]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """Epoch 1 is finite, epoch 2 feeds NaN: training stops, nothing NaN is saved."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.ones((2 * 8, 4), "float32")
    x[8:] = np.nan
    y = np.zeros(2 * 8, "int64")
    guard = training.NaNGuard()
    backup = str(tmp_path / "backup")
    callbacks = [guard, training.SafeBackup(backup, guard), training.Checkpoints(str(tmp_path), guard)]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    model.fit(ds, epochs=2, steps_per_epoch=2, callbacks=callbacks, verbose=0, shuffle=False)
    assert guard.tripped is not None and model.stop_training
    last = keras.saving.load_model(str(tmp_path / "last.keras"), safe_mode=True)
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(w.value))) for w in last.weights)
    assert training.backup_epoch(backup) == 1  # the backup is still the end of epoch 1
