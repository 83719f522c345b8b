"""Input pipelines: tfds (mocked), CIFAR's python archives, digits, offline failure."""

import io
import os
import pickle
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

pytestmark = pytest.mark.tf_only

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from keras_preact import data  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_cifar_archive(path, n_train=40, n_test=12, classes=10):
    """A CIFAR-10/100 python archive in the official layout; each image is filled
    with 20 * label so a label can be read back from any pixel."""
    rng = np.random.default_rng(0)
    hundred = classes == 100
    root = "cifar-100-python" if hundred else "cifar-10-batches-py"
    key = b"fine_labels" if hundred else b"labels"

    def batch(n):
        labels = rng.integers(0, min(classes, 12), n)
        images = np.repeat((labels * 20).astype("uint8")[:, None], 3072, axis=1)
        return {key: labels.tolist(), b"data": images}

    files = ({f"{root}/train": batch(n_train), f"{root}/test": batch(n_test)} if hundred else
             {**{f"{root}/data_batch_{i}": batch(n_train // 5) for i in range(1, 6)},
              f"{root}/test_batch": batch(n_test)})
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            raw = pickle.dumps(content)
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_tfds_cifar_pipelines_with_mock_data(name, classes):
    with tfds.testing.mock_data(num_examples=24):
        d = data.make_data(name, 8, seed=0)
        assert (d.classes, d.input_shape, d.steps_per_epoch) == (classes, (32, 32, 3), 3)
        batches = list(d.train_stream(2).as_numpy_iterator())
        assert len(batches) == 2 * 3
        x, y = batches[0]
        assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int64
        assert np.all((0 <= y) & (y < classes))
        assert abs(x.mean()) < 1.0 and 0.3 < x.std() < 2.0  # normalised
        xt, yt = next(d.test.as_numpy_iterator())
        assert xt.shape[1:] == (32, 32, 3)


def test_mocked_imagenet_resizes_before_cropping():
    with tfds.testing.mock_data(num_examples=4):
        d = data.make_data("imagenet2012", 2, eval_size=320)
        x, y = next(d.train.as_numpy_iterator())
        assert x.shape == (2, 224, 224, 3) and np.all((0 <= y) & (y < 1000))
        x, _ = next(d.test.as_numpy_iterator())
        assert x.shape == (2, 320, 320, 3)


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_python_archive_and_augmentation_keep_labels(tmp_path, classes):
    path = write_cifar_archive(str(tmp_path / "cifar.tar.gz"), classes=classes)
    x, y = data.cifar_archive_arrays(path, "train")
    assert x.shape == (40, 32, 32, 3) and x.dtype == np.uint8 and y.shape == (40,)
    np.testing.assert_array_equal(x[:, 5, 7, 1], 20 * y)
    d = data.make_data("cifar100" if classes == 100 else "cifar10", 8, cifar_archive=path)
    assert (d.train_examples, d.test_examples) == (40, 12)
    padded = []
    for images, labels in d.train_stream(2).as_numpy_iterator():
        raw = images[..., 0] * d.std[0] + d.mean[0]
        # Padding only reaches 4 pixels in: the center always holds the image, and so its label.
        np.testing.assert_allclose(raw[:, 16, 16], 20 * labels, atol=1e-3)
        # A corner is zero padding (the mean, once normalised) or the image itself.
        is_pad = np.isclose(raw[:, 0, 0], d.mean[0], atol=1e-3)
        assert np.all(is_pad | np.isclose(raw[:, 0, 0], 20 * labels, atol=1e-3))
        padded.extend(is_pad)
    assert 0 < np.mean(padded) < 1  # the random crop really moves


def test_not_an_archive(tmp_path):
    bad = tmp_path / "x.tar.gz"
    with tarfile.open(bad, "w:gz"):
        pass
    with pytest.raises(data.DataUnavailableError, match="not a CIFAR python archive"):
        data.cifar_archive_arrays(str(bad), "train")


def test_digits_split_and_epoch_determinism():
    d = data.make_data("digits", 64, seed=3)
    assert (d.train_examples, d.test_examples, d.steps_per_epoch) == (1438, 359, 22)
    full = [b for b in d.train_stream(3).as_numpy_iterator()]
    resumed = [b for b in d.train_stream(3, start_epoch=1).as_numpy_iterator()]
    assert len(full) == 66 and len(resumed) == 44
    for (a, la), (b, lb) in zip(full[22:], resumed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(full[0][1], full[22][1])  # a new order every epoch


def test_offline_failure_is_fast_and_clear(tmp_path):
    start = time.time()
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--arch", "resnet20",
         "--dataset", "cifar10", "--data-dir", str(tmp_path / "tfds"),
         "--model-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert time.time() - start < 15
    assert result.returncode == 2
    assert "cifar10 is not prepared" in result.stderr and "--cifar-archive" in result.stderr
    assert "--data-dir" in result.stderr
    with pytest.raises(data.DataUnavailableError, match="needs a manual download.*ILSVRC2012_img_train.tar"):
        data.load_tfds("imagenet2012", "train", data_dir=str(tmp_path / "tfds"))
