"""Training on the JAX backend: DataParallel over two (forced host) devices. Runs in the JAX pass."""

import csv
import os

import keras
import pytest

from keras_preact import files

from conftest import python, run_script, write_cifar_archive

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


def test_a_run_resumes_in_the_other_form_and_finishes_after_its_last_backup(tmp_path):
    """A run started unrolled resumes scanned when --scan-units says so, and unrolled again
    (auto, on JAX): its resume state is keyed by the unrolled names. A run killed after its
    last backup finishes on resume."""
    args = ["--arch", "resnet20", "--dataset", "digits", "--batch-size", "64", "--epochs", "2",
            "--steps-per-epoch", "8", "--no-plot", "--verbose", "2",
            "--model-dir", str(tmp_path / "run")]
    env = {"KERAS_BACKEND": "jax"}
    killed = run_script("train.py", *args, "--scan-units", "off", "--steps-per-execution", "4",
                        env={**env, "KERAS_PREACT_FAULT": "epoch.end@1"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert files.read_json(str(tmp_path / "run" / "config.json"))["scan_units"] == "off"
    resumed = run_script("train.py", *args, "--scan-units", "on",
                         env={**env, "KERAS_PREACT_FAULT": "epoch.end@1"})
    assert resumed.returncode == -9, resumed.stderr[-3000:]
    assert "resuming from epoch 1" in resumed.stdout
    assert "identical units scanned" in resumed.stdout
    # Nothing left to train but the results (Keras' JAX trainer used to fail here).
    finished = run_script("train.py", *args, env=env)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "resuming from epoch 2" in finished.stdout and "units unrolled" in finished.stdout


# What the GPU machine lacks: TensorFlow (so TensorBoard and tensorflow-datasets), matplotlib
# and scikit-learn. A finder that refuses them, installed in each interpreter by sitecustomize.
NOT_INSTALLED = """
import sys


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)


sys.meta_path.insert(0, NotInstalled())
"""
BLOCKED = {"tensorflow", "tensorflow_datasets", "tensorboard", "matplotlib", "sklearn"}


def test_train_without_tensorflow_and_resume_bitwise(tmp_path):
    """train.py on a JAX-only machine: CIFAR from its archive, augmented inside the step.
    A run killed after epoch 1 and resumed (two steps per execution) ends with exactly the
    weights of an uninterrupted run (one step per execution)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NOT_INSTALLED.format(blocked=BLOCKED))
    env = {"KERAS_BACKEND": "jax",
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    probe = python("-c", "import tensorflow", env=env)
    assert "No module named 'tensorflow'" in probe.stderr
    archive = write_cifar_archive(str(tmp_path / "cifar.tar.gz"), n_train=80)
    # 10 steps per epoch: 16 iterations stop inside the second epoch, as the paper's 64k do.
    args = ["--arch", "resnet20", "--dataset", "cifar10", "--cifar-archive", archive,
            "--batch-size", "8", "--iterations", "16", "--deterministic", "--verbose", "2"]
    whole = run_script("train.py", *args, "--model-dir", str(tmp_path / "whole"), env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert ("not written: curves.png (matplotlib is not installed), tensorboard/ (tensorflow "
            "is not installed)") in whole.stdout
    assert not (tmp_path / "whole" / "tensorboard").exists()
    run = ["--model-dir", str(tmp_path / "run"), "--steps-per-execution", "2"]
    killed = run_script("train.py", *args, *run, env={**env, "KERAS_PREACT_FAULT": "epoch.end@1"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_script("train.py", *args, *run, env=env)
    assert resumed.returncode == 0 and "resuming from epoch 1 of 2" in resumed.stdout
    results = [files.read_json(str(tmp_path / d / "results.json")) for d in ("whole", "run")]
    assert [r["iterations"] for r in results] == [16, 16]
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    # What needs a missing package says so in one line.
    for dataset, message in (("digits", ("--dataset digits needs scikit-learn: pip install "
                                         "scikit-learn.")),
                             ("cifar10", "needs TensorFlow, which is not installed here")):
        result = run_script("train.py", "--dataset", dataset, "--model-dir",
                            str(tmp_path / dataset), env=env)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-3000:]
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / dataset).exists()
