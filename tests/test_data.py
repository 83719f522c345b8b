"""Input pipelines: tfds (mocked), CIFAR's python archives, digits, offline failure."""

import io
import json
import os
import pathlib
import pickle
import shutil
import tarfile

import numpy as np
import pytest

pytestmark = pytest.mark.tf_only

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from keras_preact import data  # noqa: E402

from conftest import call_script, run_script, to_np, write_cifar_archive  # noqa: E402


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_tfds_cifar_pipelines_with_mock_data(name, classes):
    with tfds.testing.mock_data(num_examples=24):
        d = data.make_data(name, 8, seed=0)
        assert (d.classes, d.input_shape, d.steps_per_epoch) == (classes, (32, 32, 3), 3)
        batches = list(d.train_stream(2))
        assert len(batches) == 2 * 3
        raw, y = batches[0]
        assert raw.shape == (8, 32, 32, 3) and raw.dtype == np.uint8 and y.dtype == np.int64
        assert np.all((0 <= y) & (y < classes))
        x = to_np(d.augmentation(raw, 0))  # (inside the training step)
        assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32
        assert abs(x.mean()) < 1.0 and 0.3 < x.std() < 2.0  # normalized
        xt, _ = d.test[0]
        assert xt.shape == (8, 32, 32, 3) and xt.dtype == np.float32


def test_mocked_imagenet_resizes_before_cropping():
    with tfds.testing.mock_data(num_examples=4):
        d = data.make_data("imagenet2012", 2, eval_size=320)
        x, y = next(d.train_stream(1).as_numpy_iterator())
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
    for step, (images, labels) in enumerate(d.train_stream(2)):
        raw = to_np(d.augmentation(images, step))[..., 0] * d.std[0] + d.mean[0]
        # Padding only reaches 4 pixels in: the center always holds the image, and so its label.
        np.testing.assert_allclose(raw[:, 16, 16], 20 * labels, atol=1e-3)
        # A corner is zero padding (the mean, once normalized) or the image itself.
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
    full = list(d.train_stream(3))
    resumed = list(d.train_stream(3, start_epoch=1))
    assert len(full) == 66 and len(resumed) == 44
    for (a, la), (b, lb) in zip(full[22:], resumed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(full[0][1], full[22][1])  # a new order every epoch


def test_digits_are_tensorflows_bilinear_upsampling():
    """The 8x8 scans are upsampled without TensorFlow (SciPy), as tf.image.resize does."""
    from sklearn.datasets import load_digits

    images, labels = data.digits_arrays("train")
    order = np.random.default_rng(0).permutation(1797)[359:]
    scans = (load_digits().images[order] / 16.0 * 255.0).astype("float32")[..., None]
    expected = tf.image.resize(scans, (32, 32), method="bilinear").numpy()
    np.testing.assert_array_equal(images, np.repeat(
        np.clip(np.round(expected), 0, 255).astype("uint8"), 3, axis=-1))
    np.testing.assert_array_equal(labels, load_digits().target[order])


class _RunsCode:
    """What a crafted pickle can do: call any function on load (here it creates a file)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_archive_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = write_cifar_archive(str(tmp_path / "evil.tar.gz"), payload=_RunsCode(str(marker)))
    with pickle.loads(pickle.dumps(_RunsCode(str(tmp_path / "probe")))):
        pass  # (the payload really runs under plain pickle)
    assert (tmp_path / "probe").exists()
    with pytest.raises(data.DataUnavailableError,
                       match="member cifar-10-batches-py/data_batch_1: refused: it references "
                             "io.open, which a CIFAR batch never holds"):
        data.cifar_archive_arrays(path, "train", "cifar10")
    assert not marker.exists()


def test_official_numpy1_pickles_load():
    """The official archives were pickled by Python 2 and NumPy 1 (numpy.core...)."""
    import struct

    # {"data": uint8 array (1, 3072) of 7s, "labels": [7]}, as Python 2's cPickle wrote it.
    legacy = (b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\n"
              b"ndarray\nq\x03K\x00\x85U\x01b\x87Rq\x04(K\x01K\x01M\x00\x0c\x86cnumpy\ndtype\n"
              b"q\x05U\x02u1K\x00K\x01\x87Rq\x06(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff"
              b"\xffK\x00tb\x89T" + struct.pack("<i", 3072) + b"\x07" * 3072
              + b"tbU\x06labelsq\x07]q\x08K\x07au.")
    batch = data._CifarUnpickler(io.BytesIO(legacy), encoding="bytes").load()
    assert batch[b"data"].shape == (1, 3072) and batch[b"labels"] == [7]
    assert np.all(batch[b"data"] == 7)


def test_archive_of_the_other_cifar_and_damaged_archives(tmp_path):
    hundred = write_cifar_archive(str(tmp_path / "c100.tar.gz"), classes=100)
    with pytest.raises(data.DataUnavailableError,
                       match="is a cifar100 archive, not cifar10: pass --dataset cifar100"):
        data.make_data("cifar10", 8, cifar_archive=hundred)
    ten = write_cifar_archive(str(tmp_path / "c10.tar.gz"))
    raw = pathlib.Path(ten).read_bytes()
    (tmp_path / "truncated.tar.gz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "garbage.tar.gz").write_bytes(b"not an archive at all")
    for name in ("truncated.tar.gz", "garbage.tar.gz"):
        with pytest.raises(data.DataUnavailableError,
                           match=f"'{tmp_path / name}' is not a readable CIFAR archive: .*download "
                                 "it again"):
            data.cifar_archive_arrays(str(tmp_path / name), "train", "cifar10")


def _archive(path, first, protocol=pickle.DEFAULT_PROTOCOL):
    """A CIFAR-10 archive in the official layout whose data_batch_1 is ``first`` (pickled at
    ``protocol``, unless bytes already) and whose test batch is whole."""
    whole = {b"labels": [3, 7], b"data": np.full((2, 3072), 60, "uint8")}
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in (("data_batch_1", first), ("test_batch", whole)):
            raw = batch if isinstance(batch, bytes) else pickle.dumps(batch, protocol)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return str(path)


_IMAGES = np.zeros((2, 3072), "uint8")
_BAD_BATCHES = {  # data_batch_1 -> what the error says is wrong with it
    "labels None": ({b"labels": None, b"data": _IMAGES},
                    "labels must be a list of 2 integers, one per image, found None"),
    "labels 2**70": ({b"labels": [1, 2**70], b"data": _IMAGES},
                     "labels must be integers in [0, 10), found 1180591620717411303424"),
    "string labels": ({b"labels": ["cat", 1], b"data": _IMAGES},
                      "labels must be integers in [0, 10), found 'cat'"),
    "labels out of range": ({b"labels": [1, 10], b"data": _IMAGES},
                            "labels must be integers in [0, 10), found 10"),
    "float labels": ({b"labels": np.array([1.5, 2.0]), b"data": _IMAGES},
                     "labels must be integers in [0, 10), found 1.5"),
    "a label short": ({b"labels": [1], b"data": _IMAGES},
                      "labels must be a list of 2 integers, one per image, found shape (1,)"),
    "empty batch": ({b"labels": [], b"data": np.zeros((0, 3072), "uint8")},
                    "data must be an array of n > 0 images of 3072 bytes, shape (n, 3072), "
                    "found shape (0, 3072)"),
    "short rows": ({b"labels": [1, 2], b"data": np.zeros((2, 100), "uint8")},
                   "data must be an array of n > 0 images of 3072 bytes, shape (n, 3072), "
                   "found shape (2, 100)"),
    "no data": ({b"labels": [1, 2]}, "data must be an array of n > 0 images of 3072 bytes, "
                                     "shape (n, 3072), found None"),
    "data not bytes": ({b"labels": [1, 2], b"data": np.full((2, 3072), 300, "int16")},
                       "data must be integers in [0, 256), found 300"),
    "no labels": ({b"data": _IMAGES}, "no labels: a CIFAR-10 batch has the key 'labels', a "
                                      "CIFAR-100 batch 'fine_labels'"),
    "not a dict": ([1, 2], "a pickle of a list, not of a dict"),
    "not a pickle": (b"not a pickle\n", "not a pickle (UnpicklingError: invalid load key, 'n'.)"),
    "another codec": (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00zlib\x86R.",
                      "refused: it makes bytes of 'a' in 'zlib', which no pickled bytes do (a "
                      "crafted file could run code)"),
    "bytes(n)": (b"\x80\x02c__builtin__\nbytes\nJ\x00\xe1\xf5\x05\x85R.",
                 "refused: it makes bytes of 100000000 in 'latin1', which no pickled bytes do "
                 "(a crafted file could run code)"),
}


@pytest.mark.parametrize("batch, problem", _BAD_BATCHES.values(), ids=_BAD_BATCHES)
def test_a_bad_batch_is_named_with_what_is_wrong(tmp_path, batch, problem):
    path = _archive(tmp_path / "cifar-10-python.tar.gz", batch)
    with pytest.raises(data.DataUnavailableError) as e:
        data.cifar_archive_arrays(path, "train", "cifar10")
    assert str(e.value) == (f"{path}: member cifar-10-batches-py/data_batch_1: {problem}; the "
                            "archive is damaged or not CIFAR's python archive: download it again.")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_batches_pickled_by_python3_at_any_protocol_load(tmp_path, protocol):
    """At protocols 0-2 Python 3 pickles bytes as calls of _codecs.encode; and NumPy scalars
    (labels from ``list(array)``) name numpy's ``scalar``: both harmless, both allowed."""
    images = np.arange(2 * 3072).astype("uint8").reshape(2, 3072)
    batch = {b"labels": list(np.array([3, 7])), b"data": images}
    x, y = data.cifar_archive_arrays(_archive(tmp_path / "c.tar.gz", batch, protocol), "train",
                                     "cifar10")
    np.testing.assert_array_equal(x, images.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1))
    assert y.tolist() == [3, 7] and y.dtype == "int64"


@pytest.fixture(scope="module")
def prepared_cifar10(tmp_path_factory):
    """A whole tensorflow-datasets copy of CIFAR-10 (10 training and 2 test images), prepared
    here by tfds itself from a fake download."""
    from unittest import mock

    root = tmp_path_factory.mktemp("tfds")
    source = root / "download" / "cifar-10-batches-bin"
    source.mkdir(parents=True)
    (source / "batches.meta.txt").write_text("".join(f"class{i}\n" for i in range(10)))
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        labels = np.array([i, i + 1], "uint8")  # a label byte, then the image's 3072 bytes
        np.concatenate([labels[:, None], np.repeat(20 * labels[:, None], 3072, 1)], 1).tofile(
            source / name)
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                           lambda self, url: str(root / "download")):
        tfds.builder("cifar10", data_dir=str(root / "data")).download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return root / "data"


def _write(name, text):
    return lambda folder: (folder / name).write_text(text)


def _edit_info(edit):
    def damage(folder):
        info = json.loads((folder / "dataset_info.json").read_text())
        edit(info)
        (folder / "dataset_info.json").write_text(json.dumps(info))
    return damage


_TRAIN_FILE = "cifar10-train.tfrecord-00000-of-00001"
_DAMAGED_COPIES = {  # damage -> what the error says is wrong with the folder
    "garbage dataset_info.json": (_write("dataset_info.json", "garbage{"),
                                  "its dataset_info.json is not JSON (Expecting value: line 1 "
                                  "column 1 (char 0))"),
    "empty folder": (lambda folder: [p.unlink() for p in folder.iterdir()],
                     "it has no dataset_info.json"),
    "not tfds' dataset info": (_write("dataset_info.json", '{"splits": 5}'),
                               "its dataset_info.json is not tensorflow-datasets' description "
                               "of cifar10"),
    "another version's info": (_edit_info(lambda info: info.update(version="1.0.0")),
                               "its dataset_info.json is not tensorflow-datasets' description "
                               "of cifar10"),
    "no train split": (_edit_info(lambda info: info["splits"].pop(0)),
                       "its dataset_info.json lists no 'train' split"),
    "a file missing": (lambda folder: (folder / _TRAIN_FILE).unlink(),
                       f"{_TRAIN_FILE}, a file of the 'train' split, is missing"),
    "a file truncated": (lambda folder: os.truncate(folder / _TRAIN_FILE, 300),
                         "a file of the 'train' split is truncated or corrupt"),
}


@pytest.mark.parametrize("damage, problem", _DAMAGED_COPIES.values(), ids=_DAMAGED_COPIES)
def test_a_damaged_tfds_copy_is_named_with_what_is_wrong(tmp_path, prepared_cifar10, damage,
                                                         problem):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared_cifar10, data_dir)
    x, y = data.tfds_arrays("cifar10", "train", str(data_dir))  # whole, it reads
    assert x.shape == (10, 32, 32, 3) and sorted(y) == sorted(np.arange(5).repeat(2) + [0, 1] * 5)
    np.testing.assert_array_equal(x[:, 16, 16, 0], 20 * y)
    folder = data_dir / "cifar10" / "3.0.2"
    damage(folder)
    with pytest.raises(data.DataUnavailableError) as e:
        data.tfds_arrays("cifar10", "train", str(data_dir))
    assert str(e.value) == (
        f"{folder}: {problem}: this tensorflow-datasets copy of cifar10 is incomplete or damaged. "
        "Delete the folder and prepare cifar10 again (`tfds build cifar10` where it can be "
        "downloaded, then copy the folder here).")


def test_train_script_says_what_is_wrong_in_one_line(tmp_path):
    """Through scripts/train.py: a bad archive and a damaged tensorflow-datasets folder."""
    archive = _archive(tmp_path / "cifar-10-python.tar.gz", {b"labels": None, b"data": _IMAGES})
    info = tmp_path / "tfds" / "cifar10" / "3.0.2" / "dataset_info.json"
    info.parent.mkdir(parents=True)
    info.write_text("garbage{")
    for source, says in ((["--cifar-archive", archive], "member cifar-10-batches-py/data_batch_1: "
                                                        "labels must be a list of 2 integers"),
                         (["--data-dir", str(tmp_path / "tfds")],
                          f"{info.parent}: its dataset_info.json is not JSON")):
        result = run_script("train.py", "--arch", "resnet20", "--dataset", "cifar10", *source,
                            "--model-dir", str(tmp_path / "run"))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and says in errors[0], result.stderr[-3000:]
        assert not os.path.exists(tmp_path / "run")


def test_offline_failure_is_clear(tmp_path, capsys):
    code, _, err = call_script("train", ["--arch", "resnet20", "--dataset", "cifar10",
                                         "--data-dir", str(tmp_path / "tfds"), "--model-dir",
                                         str(tmp_path / "run")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cifar10 is not prepared" in err and "--cifar-archive" in err and "--data-dir" in err
    assert not os.path.exists(tmp_path / "run")
    with pytest.raises(data.DataUnavailableError, match="needs a manual download.*ILSVRC2012_img_train.tar"):
        data.load_tfds("imagenet2012", "train", data_dir=str(tmp_path / "tfds"))


def test_imagenet_training_epoch_then_the_papers_320_evaluation(tmp_path):
    """train() on (mocked) ImageNet: one epoch of 224 crops, then validation on 320 crops."""
    from keras_preact import config as cfg
    from keras_preact import training

    run_dir = str(tmp_path / "run")
    config = cfg.TrainConfig(model_dir=run_dir, arch="resnet18", batch_size=2, epochs=1,
                             steps_per_epoch=2, eval_size=320, jit_compile="false",
                             verbose=0, plot=False)
    messages = []
    with tfds.testing.mock_data(num_examples=4):
        results = training.train(config, log=messages.append)
    assert results["iterations"] == 2 and 0.0 <= results["test_error"] <= 100.0
    assert any("evaluated at 320x320" in m for m in messages)
    with open(os.path.join(run_dir, "config.json")) as f:
        recorded = json.load(f)
    assert recorded["resolved"]["eval_size"] == 320 and recorded["input_shape"] == [224, 224, 3]
    import keras

    model = keras.saving.load_model(os.path.join(run_dir, "last.keras"), safe_mode=True)
    assert model.input_shape == (None, None, None, 3)  # fully convolutional, as in the paper
