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
