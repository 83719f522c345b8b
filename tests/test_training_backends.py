"""Training on the JAX and torch backends (CI's JAX and torch passes): kill and resume
bitwise, a resume in the other form, without TensorFlow installed; on JAX, DataParallel over
two (forced host) devices."""

import csv
import os

import pytest

from keras_preact import files
from keras_preact.vocab._validation import installed

from conftest import BACKEND, python, run_script, without, write_cifar_archive

pytestmark = pytest.mark.skipif(BACKEND == "tensorflow", reason="runs in the JAX and torch passes")
# The form --scan-units auto picks on a CPU (by measurement, keras_preact.train.config).
AUTO_FORM = {"jax": "units unrolled", "torch": "units unrolled"}
# Steps per execution where the backend has them (Keras' torch trainer runs one per call).
MANY_STEPS = "1" if BACKEND == "torch" else "2"


@pytest.mark.skipif(BACKEND != "jax", reason="DataParallel is Keras' JAX distribution")
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
    """A run started unrolled resumes scanned when --scan-units says so, and in auto's form
    again: its resume state is keyed by the unrolled names. A run killed after its last
    backup finishes on resume."""
    args = ["--arch", "resnet20", "--dataset", "digits", "--batch-size", "64", "--epochs", "2",
            "--steps-per-epoch", "8", "--no-plot", "--verbose", "2",
            "--model-dir", str(tmp_path / "run")]
    env = {"KERAS_BACKEND": BACKEND}
    killed = run_script("train.py", *args, "--scan-units", "off", "--steps-per-execution",
                        MANY_STEPS,
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
    assert "resuming from epoch 2" in finished.stdout and AUTO_FORM[BACKEND] in finished.stdout


# What the GPU machine lacks: TensorFlow (so TensorBoard and tensorflow-datasets), matplotlib
# and scikit-learn.
BLOCKED = {"tensorflow", "tensorflow_datasets", "tensorboard", "matplotlib", "sklearn"}


def test_train_without_tensorflow_and_resume_bitwise(tmp_path):
    """train.py on a machine without TensorFlow: CIFAR from its archive, augmented in the step.
    A run killed after epoch 1 and resumed (two steps per execution, where the backend has
    them) ends with exactly the weights of an uninterrupted run (one step per execution)."""
    env = {"KERAS_BACKEND": BACKEND, **without(BLOCKED, tmp_path)}
    probe = python("-c", "import importlib.util; print(importlib.util.find_spec('tensorflow'))",
                   env=env)
    assert probe.stdout == "None\n", probe.stderr[-2000:]
    archive = write_cifar_archive(str(tmp_path / "cifar.tar.gz"), n_train=80)
    # 10 steps per epoch: 16 iterations stop inside the second epoch, as the paper's 64k do.
    args = ["--arch", "resnet20", "--dataset", "cifar10", "--cifar-archive", archive,
            "--batch-size", "8", "--iterations", "16", "--deterministic", "--verbose", "2"]
    whole = run_script("train.py", *args, "--model-dir", str(tmp_path / "whole"), env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert ("not written: curves.png (matplotlib is not installed), tensorboard/ (tensorflow "
            "is not installed)") in whole.stdout
    assert not (tmp_path / "whole" / "tensorboard").exists()
    run = ["--model-dir", str(tmp_path / "run"), "--steps-per-execution", MANY_STEPS]
    killed = run_script("train.py", *args, *run, env={**env, "KERAS_PREACT_FAULT": "epoch.end@1"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_script("train.py", *args, *run, env=env)
    assert resumed.returncode == 0 and "resuming from epoch 1 of 2" in resumed.stdout
    results = [files.read_json(str(tmp_path / d / "results.json")) for d in ("whole", "run")]
    assert [r["iterations"] for r in results] == [16, 16]
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    # What needs a missing package says so in one line.
    for dataset, message in (("digits", ('--dataset digits needs scikit-learn, which is not '
                                         'installed here: pip install "keras_preact[lab]".')),
                             ("cifar10", ('needs tensorflow, which is not installed here: pip '
                                          'install "keras_preact[tensorflow]".'))):
        result = run_script("train.py", "--dataset", dataset, "--model-dir",
                            str(tmp_path / dataset), env=env)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-3000:]
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / dataset).exists()


@pytest.mark.skipif(BACKEND != "torch", reason="what Keras' torch trainer lacks")
@pytest.mark.parametrize("argv, message", [
    (["--steps-per-execution", "2"], "--steps-per-execution needs the TensorFlow or JAX backend"),
    (["--strategy", "mirrored"], "--strategy mirrored needs the TensorFlow or JAX backend"),
])
def test_what_torch_cannot_do_is_refused_before_any_work(tmp_path, argv, message):
    result = run_script("train.py", "--arch", "resnet20", "--dataset", "digits", *argv,
                        "--model-dir", str(tmp_path / "run"), env={"KERAS_BACKEND": "torch"})
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(BACKEND != "torch" or not installed("tensorflow"),
                    reason="a torch run, exported with TensorFlow")
def test_a_torch_trained_run_exports_through_its_keras_file(tmp_path):
    """TensorFlow is export's engine: a run trained on torch is exported (and verified) by
    scripts/export.py under KERAS_BACKEND=tensorflow, from its last.keras."""
    run = str(tmp_path / "run")
    trained = run_script("train.py", "--arch", "resnet20", "--dataset", "digits", "--batch-size",
                         "32", "--epochs", "1", "--steps-per-epoch", "3", "--no-plot",
                         "--model-dir", run, env={"KERAS_BACKEND": "torch"})
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert files.read_json(os.path.join(run, "config.json"))["backend"] == "torch"
    out = str(tmp_path / "export")
    exported = run_script("export.py", "--model", run, "--formats", "saved_model",
                          "--verify-samples", "32", "--out", out,
                          env={"KERAS_BACKEND": "tensorflow"})
    assert exported.returncode == 0, exported.stderr[-3000:]
    (artifact,) = files.read_json(os.path.join(out, "manifest.json"))["artifacts"]
    assert artifact["path"] == "saved_model" and artifact["verification"]["passed"]
    assert artifact["verification"]["max_abs_diff_logits"] < 1e-4
