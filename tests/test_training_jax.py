"""Training on the JAX backend: DataParallel over two (forced host) devices. Runs in the JAX pass."""

import csv
import os

import keras
import pytest

from keras_preact import files

from conftest import run_script

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs in the JAX pass")


def test_data_parallel_on_two_devices(tmp_path):
    run_dir = str(tmp_path / "run")
    result = run_script("train.py", "--arch", "resnet20", "--dataset", "digits", "--batch-size",
                        "64", "--epochs", "2", "--no-plot", "--model-dir", run_dir,
                        env={"KERAS_BACKEND": "jax",
                             "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "strategy DataParallel (2 replicas)" in result.stdout and "\r" not in result.stdout
    assert files.read_json(os.path.join(run_dir, "results.json"))["replicas"] == 2
    assert files.read_json(os.path.join(run_dir, "config.json"))["backend"] == "jax"
    with open(os.path.join(run_dir, "log.csv")) as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses[1] < losses[0]


def test_a_run_keeps_its_form_and_finishes_after_its_last_backup(tmp_path):
    """A run started unrolled resumes unrolled whatever --scan-units says (its resume state
    is matched by position); a run killed after its last backup finishes on resume."""
    args = ["--arch", "resnet20", "--dataset", "digits", "--batch-size", "64", "--epochs", "2",
            "--no-plot", "--verbose", "2", "--model-dir", str(tmp_path / "run")]
    env = {"KERAS_BACKEND": "jax"}
    killed = run_script("train.py", *args, "--scan-units", "off", "--steps-per-execution", "4",
                        env={**env, "KERAS_PREACT_FAULT": "epoch.end@1"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert files.read_json(str(tmp_path / "run" / "config.json"))["scan_units"] == "off"
    resumed = run_script("train.py", *args, "--scan-units", "on",
                         env={**env, "KERAS_PREACT_FAULT": "epoch.end@1"})
    assert resumed.returncode == -9, resumed.stderr[-3000:]
    assert "resuming from epoch 1" in resumed.stdout and "units unrolled" in resumed.stdout
    # Nothing left to train but the results (Keras' JAX trainer used to fail here).
    finished = run_script("train.py", *args, env=env)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "resuming from epoch 2" in finished.stdout


def test_steps_per_execution_trains_the_same_weights(tmp_path):
    args = ["--arch", "resnet20", "--dataset", "digits", "--batch-size", "64", "--epochs", "1",
            "--no-plot", "--verbose", "0", "--deterministic", "--scan-units", "off"]
    digests = []
    for n in ("1", "4"):
        run_dir = str(tmp_path / n)
        result = run_script("train.py", *args, "--model-dir", run_dir,
                            "--steps-per-execution", n, env={"KERAS_BACKEND": "jax"})
        assert result.returncode == 0, result.stderr[-3000:]
        digests.append(files.read_json(os.path.join(run_dir, "results.json"))["weights_sha256"])
    assert digests[0] == digests[1]
