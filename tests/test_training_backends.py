"""Training on the JAX and torch backends (CI's JAX and torch passes): kill and resume
bitwise, a resume in the other form, without TensorFlow installed; on JAX, DataParallel over
two (forced host) devices and over two processes (--strategy multi_worker)."""

import os

import numpy as np
import pytest

from keras_preact import files
from keras_preact.train import rundir
from keras_preact.vocab._validation import installed

from conftest import BACKEND, python, run_script, without, write_cifar_archive

pytestmark = pytest.mark.skipif(BACKEND == "tensorflow", reason="runs in the JAX and torch passes")
# Steps per execution where the backend has them (Keras' torch trainer runs one per call).
MANY_STEPS = "1" if BACKEND == "torch" else "2"


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
    # (--scan-units auto, on a CPU: unrolled under XLA (JAX) and eagerly (torch))
    assert "resuming from epoch 2" in finished.stdout and "units unrolled" in finished.stdout


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
                                         'installed here: pip install "keras_preact[lab]" (in '
                                         'a checkout: pip install ".[lab]").')),
                             ("cifar10", ('needs tensorflow, which is not installed here: pip '
                                          'install "keras_preact[tensorflow]" (in a checkout: '
                                          'pip install ".[tensorflow]").'))):
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
    # (one line of ours; TensorFlow, installed beside, may log its start-up lines before it)
    said = [line for line in result.stderr.splitlines() if not line.startswith(("I0000", "WARNING: All log"))]
    assert len(said) == 1 and said[0].startswith("error: "), result.stderr
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


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(BACKEND != "jax", reason="Keras' distribution is JAX's")
def test_two_processes_train_as_one_over_two_devices_and_resume_after_a_kill(tmp_path):
    """DataParallel: one process over two (forced host) devices; and --strategy multi_worker:
    two processes on localhost (Keras' variables), one CPU device each, each feeding half of
    every global batch. Killed where the first epoch ends and started again, the two
    processes end with the one's weights to float32 rounding (a sum of per-device gradients
    is not bitwise the same sum in another order)."""
    args = ["--arch", "resnet20", "--dataset", "digits", "--batch-size", "32", "--epochs", "2",
            "--steps-per-epoch", "3", "--no-plot", "--deterministic", "--verbose", "2"]
    one = run_script("train.py", *args, "--model-dir", str(tmp_path / "one"),
                     env={"KERAS_BACKEND": "jax",
                          "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert one.returncode == 0, one.stderr[-3000:]
    assert "strategy DataParallel (2 replicas)" in one.stdout and "\r" not in one.stdout
    assert files.read_json(str(tmp_path / "one" / "results.json"))["replicas"] == 2
    assert files.read_json(str(tmp_path / "one" / "config.json"))["backend"] == "jax"

    def cluster(name, fault=None):
        """Run the two processes to their end; their (exit code, stdout, stderr)."""
        port, processes, outs = _free_port(), [], []
        try:
            for i in (0, 1):
                out = [open(tmp_path / f"{name}{i}.{s}", "w+") for s in ("out", "err")]
                outs.append(out)
                processes.append(run_script(
                    "train.py", *args, "--strategy", "multi_worker", "--model-dir",
                    str(tmp_path / "two"), wait=False, stdout=out[0], stderr=out[1],
                    env={"KERAS_BACKEND": "jax",
                         "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"localhost:{port}",
                         "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                         "KERAS_DISTRIBUTION_PROCESS_ID": str(i),
                         **({"KERAS_PREACT_FAULT": fault} if fault else {})}))
            for p in processes:
                p.wait(timeout=600)
        finally:
            for p in processes:
                p.kill()
        said = []
        for p, out in zip(processes, outs):
            for f in out:
                f.seek(0)
            said.append((p.returncode, out[0].read(), out[1].read()))
            for f in out:
                f.close()
        return said

    # Both kill themselves where the first epoch ends, after its backup. (A process whose
    # peer died first may instead stop with an error of JAX's: either way it stopped.)
    for code, _, stderr in cluster("killed", "epoch.end@1"):
        assert code != 0, stderr[-3000:]
    restarted = cluster("resumed")
    for code, stdout, stderr in restarted:
        assert code == 0, stderr[-3000:]
        assert "DataParallel (2 replicas)" in stdout
    # Both from the epoch both backups hold: the first (unless one stopped before writing it).
    starts = [[line for line in stdout.splitlines() if line.startswith("run ")]
              for _, stdout, _ in restarted]
    assert starts[0] == starts[1] and ("resuming from epoch 1 of 2" in starts[0][0]
                                       or "starting epoch 1 of 2" in starts[0][0]), starts
    two = tmp_path / "two"
    assert files.read_json(str(two / "results.json"))["replicas"] == 2
    assert (two / "workers" / "worker1").is_dir() and (two / "backup" / "worker1").is_dir()
    assert not (two / "workers" / "worker1" / "last.keras").exists()  # the chief's alone
    from keras_preact import load_keras_file

    weights = [load_keras_file(str(tmp_path / d / "last.keras")).get_weights()
               for d in ("one", "two")]
    for a, b in zip(*weights):
        np.testing.assert_allclose(b, a, rtol=0, atol=2e-5 * max(1.0, np.abs(a).max()))


@pytest.mark.skipif(BACKEND != "jax", reason="Keras' distribution is JAX's")
@pytest.mark.parametrize("strategy, variables, message", [
    ("multi_worker", {}, "set KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES, "
                         "KERAS_DISTRIBUTION_PROCESS_ID"),
    ("multi_worker", {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "localhost:1",
                      "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                      "KERAS_DISTRIBUTION_PROCESS_ID": "2"}, "must be in 0 .."),
    ("auto", {"KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "1"},
     "pass --strategy multi_worker on the JAX backend to join it"),
])
def test_a_jax_cluster_is_described_by_all_of_keras_variables(tmp_path, strategy, variables,
                                                               message):
    env = {"KERAS_BACKEND": "jax", **{v: "" for v in rundir.JAX_CLUSTER}, **variables}
    result = run_script("train.py", "--arch", "resnet20", "--dataset", "digits", "--strategy",
                        strategy, "--model-dir", str(tmp_path / "run"), env=env)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(BACKEND != "torch", reason="the plain-PyTorch reference of the benchmark")
def test_the_plain_pytorch_reference_trains_its_module():
    """benchmark train's plain-PyTorch row: 3 epochs of SGD on synthetic data, timed."""
    import torch

    from keras_preact.deploy import benchmark

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    before = [p.detach().clone() for p in model.parameters()]
    first, steady = benchmark.torch_timings(model, batch=4, steps=2, shape=(8, 8, 3), classes=3)
    assert first > 0 and steady > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
