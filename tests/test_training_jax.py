"""Training on the JAX backend: DataParallel over two (forced host) devices. Runs in the JAX pass."""

import csv
import json
import os
import subprocess
import sys

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs in the JAX pass")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_data_parallel_on_two_devices(tmp_path):
    run_dir = str(tmp_path / "run")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--arch", "resnet20",
         "--dataset", "digits", "--batch-size", "64", "--epochs", "2", "--no-plot",
         "--verbose", "2", "--model-dir", run_dir],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    assert results["replicas"] == 2
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["backend"] == "jax"
    with open(os.path.join(run_dir, "log.csv")) as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses[1] < losses[0]
