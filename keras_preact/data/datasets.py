"""Input pipelines: tensorflow-datasets CIFAR-10/100 and ImageNet, CIFAR's own
python archives, and scikit-learn's bundled digits.

* The small data sets (CIFAR from its python archive, digits) need no TensorFlow:
  they are held in memory as uint8, fed as raw batches, and normalized and augmented
  inside the compiled training step (:mod:`keras_preact.layers.augment`), on the
  accelerator. CIFAR training augmentation as in the paper: per-channel mean/std
  normalization from the training set, 4-pixel zero padding, random 32x32 crop,
  random horizontal flip. Each epoch's order depends only on ``(seed, epoch)`` and
  each batch's augmentation only on ``(seed, step)``, so a run resumed at epoch k
  sees exactly the batches an uninterrupted run sees.
* tensorflow-datasets reading and ImageNet use TensorFlow as the engine
  (``tf.data``). ImageNet: scale augmentation (shorter side uniform in [256, 480]),
  random 224 crop, flip; evaluation on a center crop of 224 (shorter side 256) or
  the paper's single 320 crop (shorter side 320).
* Offline: a data set that is not prepared and cannot be downloaded fails at
  once with :class:`DataUnavailableError`, saying what to provide.
"""

import dataclasses
import io
import json
import os
import pickle
import socket
import tarfile
import zlib

import numpy as np

from keras_preact.vocab._validation import UserError, check_choice
from keras_preact.vocab.extras import require


class DataUnavailableError(UserError, RuntimeError):
    """The data set is neither prepared nor downloadable here, or what was given is not it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: int
    image_size: int  # training crop
    flip: bool  # random horizontal flips in training (not for digits)
    download_host: str = None
    manual: bool = False


DATASETS = {
    "cifar10": DatasetInfo("cifar10", 10, 32, True, "www.cs.toronto.edu"),
    "cifar100": DatasetInfo("cifar100", 100, 32, True, "www.cs.toronto.edu"),
    "imagenet2012": DatasetInfo("imagenet2012", 1000, 224, True, manual=True),
    "digits": DatasetInfo("digits", 10, 32, False),
}
# ImageNet statistics (RGB, 0-255) of the training set, as used by fb.resnet.torch.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
DIGITS_TEST_FRACTION = 0.2


def tensorflow():
    """TensorFlow (the tfds and ImageNet engine), or a one-line error saying what to install."""
    require("tensorflow", what="Reading tensorflow-datasets and ImageNet (--cifar-archive and "
            "--dataset digits need no TensorFlow)")
    import tensorflow as tf

    return tf


# -- array sources (small data sets) ----------------------------------------------
def digits_arrays(split):
    """scikit-learn's 1,797 8x8 digit scans as 32x32x3 uint8, fixed train/test split."""
    require("sklearn", "scipy", what="--dataset digits")
    from scipy import ndimage
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).astype("float32")
    # Bilinear upsampling with pixel centres at half-integers: equal to tf.image.resize's.
    images = ndimage.zoom(images, (1, 4, 4), order=1, mode="nearest", grid_mode=True)
    images = np.repeat(np.clip(np.round(images), 0, 255).astype("uint8")[..., None], 3, axis=-1)
    order = np.random.default_rng(0).permutation(len(images))
    n_test = int(round(DIGITS_TEST_FRACTION * len(images)))
    idx = order[n_test:] if split == "train" else order[:n_test]
    return images[idx], digits.target[idx].astype("int64")


# What CIFAR's python batches hold: dicts, lists, bytes, str, numbers and NumPy arrays
# and scalars. A pickle can name any callable; these constructors are the only ones a batch
# needs (and _BYTES_GLOBALS, for bytes pickled by Python 3 at protocol 2 or lower).
_CIFAR_GLOBALS = {("numpy._core.multiarray", "_reconstruct"), ("numpy._core.numeric", "_frombuffer"),
                  ("numpy._core.multiarray", "scalar"), ("numpy", "ndarray"), ("numpy", "dtype")}
# The label key of each archive: CIFAR-10's batches say b"labels", CIFAR-100's b"fine_labels".
_CIFAR_LABELS = {"cifar10": b"labels", "cifar100": b"fine_labels"}


class _Refused(pickle.UnpicklingError):
    """The pickle names a callable that a CIFAR batch never needs."""


# Python 3 pickles bytes at protocols 0-2 as calls: _codecs.encode(text, "latin1"), and
# __builtin__.bytes() when empty. _latin1_bytes makes these two calls and no other.
_BYTES_GLOBALS = {("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes")}


def _latin1_bytes(text="", encoding="latin1"):
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused(f"it makes bytes of {text!r:.20} in {encoding!r}, which no pickled bytes "
                       "do (a crafted file could run code)")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("numpy.core"):  # pickled by NumPy 1 (the official archives)
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) in _BYTES_GLOBALS:
            return _latin1_bytes
        if (module, name) not in _CIFAR_GLOBALS:
            raise _Refused(f"it references {module}.{name}, which a CIFAR batch never holds (a "
                           "crafted file could run code)")
        return super().find_class(_numpy_spelling(module), name)


def _numpy_spelling(module):
    """``module`` (spelt as NumPy 2 does) as the installed NumPy names it: NumPy 1 has no
    ``numpy._core``."""
    if module.startswith("numpy._core") and np.lib.NumpyVersion(np.__version__) < "2.0.0":
        return "numpy.core" + module[len("numpy._core"):]
    return module


def _check_integers(bad, what, values, high):
    """Raise ``bad(...)`` at the first entry of the array ``values`` not an integer in [0, high)."""
    if values.dtype.kind in "iu":
        values = values[(values < 0) | (values >= high)]
    for v in values.flat:
        v = v.item() if isinstance(v, np.generic) else v
        if not isinstance(v, int) or not 0 <= v < high:
            raise bad(f"{what} must be integers in [0, {high}), found {v!r:.40}")


def _array(value):
    """``value`` as an array if it is one or a list (of objects: ``[1, "a"]`` stays mixed),
    else None; and how a message names what it is."""
    try:
        array = (value if isinstance(value, np.ndarray) else
                 np.array(value, dtype=object) if isinstance(value, list) else None)
    except ValueError:  # a list NumPy cannot hold
        array = None
    return array, (f"{value!r:.40}" if array is None else f"shape {array.shape}")


def _read_batch(raw, member, path, name):
    """(images NHWC uint8, labels int64) of the pickled batch ``raw``, the archive member
    ``member`` of ``path``, checked to be a whole CIFAR batch of data set ``name`` (any, if
    None); anything else raises one line that names the member and what is wrong."""
    def bad(problem):
        return DataUnavailableError(f"{path}: member {member}: {problem}; the archive is damaged "
                                    "or not CIFAR's python archive: download it again.")

    try:
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as e:
        raise bad(f"refused: {e}") from None
    except Exception as e:  # unpickling arbitrary bytes can fail in almost any way
        raise bad(f"not a pickle ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict):
        raise bad(f"a pickle of a {type(batch).__name__}, not of a dict")
    kind = next((n for n, key in _CIFAR_LABELS.items() if key in batch), None)
    if kind is None:
        raise bad("no labels: a CIFAR-10 batch has the key 'labels', a CIFAR-100 batch "
                  "'fine_labels'")
    if name is not None and kind != name:
        raise DataUnavailableError(f"{path!r} is a {kind} archive, not {name}: pass --dataset "
                                   f"{kind}, or the {name} archive.")
    labels = _CIFAR_LABELS[kind].decode()
    (x, x_found), (y, y_found) = _array(batch.get(b"data")), _array(batch[_CIFAR_LABELS[kind]])
    if x is None or x.ndim != 2 or x.shape[1] != 3072 or not len(x):
        raise bad("data must be an array of n > 0 images of 3072 bytes, shape (n, 3072), "
                  f"found {x_found}")
    if y is None or y.shape != (len(x),):
        raise bad(f"{labels} must be a list of {len(x)} integers, one per image, found {y_found}")
    _check_integers(bad, "data", x, 256)
    _check_integers(bad, labels, y, DATASETS[kind].classes)
    return x.astype("uint8").reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y.astype("int64")


def cifar_archive_arrays(path, split, name=None):
    """Read ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` in their own format.

    The batches are unpickled with only the constructors a CIFAR batch needs;
    ``name`` (``cifar10``/``cifar100``) checks that the archive is that data set.
    """
    if not os.path.isfile(path):
        raise DataUnavailableError(f"CIFAR archive not found: {path!r}.")
    wanted = {"train": ("data_batch_", "/train"), "test": ("test_batch", "/test")}[split]
    images, labels = [], []
    try:
        with tarfile.open(path, "r:*") as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and (
                    os.path.basename(m.name).startswith(wanted[0]) or m.name.endswith(wanted[1]))),
                key=lambda m: m.name,
            )
            if not members:
                raise DataUnavailableError(
                    f"{path!r} is not a CIFAR python archive (no {split} batches inside); "
                    "expected cifar-10-python.tar.gz or cifar-100-python.tar.gz."
                )
            for member in members:
                x, y = _read_batch(tar.extractfile(member).read(), member.name, path, name)
                images.append(x)
                labels.append(y)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataUnavailableError(
            f"{path!r} is not a readable CIFAR archive: it is truncated, damaged or not a "
            f".tar.gz ({type(e).__name__}); download it again.") from None
    return np.concatenate(images), np.concatenate(labels)


def _network_reachable(host, timeout=3.0):
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _unavailable_message(info, data_dir):
    where = data_dir or "~/tensorflow_datasets"
    if info.manual:
        return (
            f"{info.name} is not prepared in {where!r}, and tensorflow-datasets cannot "
            "download it: it needs a manual download. Place ILSVRC2012_img_train.tar and "
            f"ILSVRC2012_img_val.tar in {os.path.join(where, 'downloads', 'manual')!r} "
            "(then the first run prepares it), or pass --data-dir with a prepared copy."
        )
    archive = "cifar-10-python.tar.gz" if info.name == "cifar10" else "cifar-100-python.tar.gz"
    return (
        f"{info.name} is not prepared in {where!r} and cannot be downloaded (no network "
        f"access to {info.download_host}). Pass --data-dir with a prepared "
        f"tensorflow-datasets copy, or --cifar-archive /path/to/{archive}, or use "
        "--dataset digits, which needs no download."
    )


def _tfds_folder(name, data_dir):
    """The folder tensorflow-datasets reads ``name`` from, whether it is there or not."""
    require("tensorflow_datasets", what="Reading a tensorflow-datasets data set")
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import constants

    # tfds' own layout, <data dir>/<name>/<version>, and its default data dir; no function
    # says it in both 4.9.2 (the floor) and 4.9.10 (file_utils changed between them).
    root = data_dir if data_dir is not None else os.environ.get("TFDS_DATA_DIR", constants.DATA_DIR)
    return os.path.join(os.path.expanduser(root), name, str(tfds.builder_cls(name).VERSION))


def _damaged_tfds(folder, name, problem):
    return DataUnavailableError(
        f"{folder}: {problem}: this tensorflow-datasets copy of {name} is incomplete or damaged. "
        f"Delete the folder and prepare {name} again (`tfds build {name}` where it can be "
        "downloaded, then copy the folder here).")


def _check_tfds_copy(tfds, name, split, data_dir):
    """Refuse, naming its folder, a copy of ``name`` that tensorflow-datasets would find but
    fail to read (with a ParseError, a KeyError, a missing file deep inside ``tf.data``):
    its dataset_info.json must describe ``name`` and the files of ``split`` must be there.
    No folder is no copy: ``tfds.load`` then says that ``name`` is not prepared."""
    from google.protobuf import json_format

    folder = _tfds_folder(name, data_dir)
    if not os.path.isdir(folder):
        return
    try:
        with open(os.path.join(folder, "dataset_info.json"), "rb") as f:
            json.load(f)
    except FileNotFoundError:
        raise _damaged_tfds(folder, name, "it has no dataset_info.json") from None
    except ValueError as e:
        raise _damaged_tfds(folder, name, f"its dataset_info.json is not JSON ({e})") from None
    try:
        splits = tfds.builder(name, data_dir=data_dir).info.splits
    # What tfds raises for a wrong dataset info; 4.9.2 re-raises a ParseError as FileNotFoundError.
    except (AssertionError, FileNotFoundError, json_format.Error):
        raise _damaged_tfds(folder, name, "its dataset_info.json is not tensorflow-datasets' "
                                          f"description of {name}") from None
    if split not in splits:
        raise _damaged_tfds(folder, name, f"its dataset_info.json lists no {split!r} split")
    missing = [p.name for p in splits[split].filepaths if not p.exists()]
    if missing:
        raise _damaged_tfds(folder, name, f"{missing[0]}, a file of the {split!r} split, is "
                                          "missing")


def load_tfds(name, split, data_dir=None, **kwargs):
    """``tfds.load`` that fails fast and clearly when the data cannot be had offline, or
    what is there is damaged. ``split``: a split's name."""
    tensorflow()
    require("tensorflow_datasets", what="Reading a tensorflow-datasets data set")
    import tensorflow_datasets as tfds

    _check_tfds_copy(tfds, name, split, data_dir)
    info = DATASETS[name]
    common = dict(split=split, data_dir=data_dir, as_supervised=True, **kwargs)
    try:
        return tfds.load(name, download=False, **common)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError):
        pass
    except Exception as e:  # tfds raises several types for "not prepared"
        if "could not find data" not in str(e).lower() and "not found" not in str(e).lower():
            raise
    if info.manual or not _network_reachable(info.download_host):
        raise DataUnavailableError(_unavailable_message(info, data_dir))
    return tfds.load(name, download=True, **common)


def tfds_arrays(name, split, data_dir=None):
    ds = load_tfds(name, split, data_dir)
    images, labels = [], []
    try:
        for x, y in ds.batch(4096).as_numpy_iterator():
            images.append(x)
            labels.append(y)
    except tensorflow().errors.DataLossError:
        raise _damaged_tfds(_tfds_folder(name, data_dir), name,
                            f"a file of the {split!r} split is truncated or corrupt") from None
    return np.concatenate(images).astype("uint8"), np.concatenate(labels).astype("int64")


def load_arrays(name, split, data_dir=None, cifar_archive=None):
    """(images uint8 NHWC, labels int64) of a small data set's split."""
    check_choice("dataset", name, [n for n in DATASETS if n != "imagenet2012"])
    check_choice("split", split, ("train", "test"))
    if name == "digits":
        return digits_arrays(split)
    if cifar_archive:
        return cifar_archive_arrays(cifar_archive, split, name)
    return tfds_arrays(name, split, data_dir)


def channel_stats(images):
    """Per-channel mean and std (0-255 scale) of a uint8 image array."""
    x = images.reshape(-1, images.shape[-1]).astype("float64")
    return tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in x.std(0))


# -- pipelines ------------------------------------------------------------------------
@dataclasses.dataclass
class Data:
    """Train and test pipelines plus what the model and the run need to know."""

    name: str
    classes: int
    input_shape: tuple  # of the training images
    train_examples: int
    test_examples: int
    steps_per_epoch: int
    mean: tuple
    std: tuple
    train_stream: object  # (epochs, start_epoch=0) -> iterable of (image, label) batches
    test: object  # batches of (normalized float32 image, label)
    # In-memory sets: the training batches are raw uint8 images, normalized and augmented
    # inside the training step by this (an ``augment.InStepAugmentation``).
    augmentation: object = None


def _normalizer(mean, std):
    from keras_preact.layers.preprocessing import normalization_layer

    return normalization_layer(mean, std)


def _steps(examples, batch_size, steps_per_epoch, name):
    steps = steps_per_epoch or examples // batch_size
    if steps < 1:
        raise ValueError(f"Batch size {batch_size} exceeds the {examples} training examples "
                         f"of {name}.")
    return steps


def epoch_order(seed, epoch, examples):
    """The order of the training examples in ``epoch``: a function of ``(seed, epoch)``."""
    return np.random.default_rng([seed, epoch]).permutation(examples)


def _batches(x, y, batch_size, multiple=1):
    """Consecutive batches of in-memory arrays (the last one may be short), as a Keras
    ``PyDataset``: re-iterable, on every backend, without ``tf.data``. With ``multiple``
    above 1 (the devices a data-parallel JAX process splits each batch among, evenly), a
    short batch is padded to a multiple of it with blank images of sample weight 0, so that
    the accuracy is the images' own (the loss, averaged over the batch, counts the blanks as
    zeros: N / (N + blanks) of its value on that batch)."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return (len(x) + batch_size - 1) // batch_size

        def __getitem__(self, index):
            part = slice(index * batch_size, (index + 1) * batch_size)
            if multiple == 1:
                return x[part], y[part]
            images, labels = x[part], y[part]
            pad = -len(images) % multiple
            weights = np.concatenate([np.ones(len(images), "float32"), np.zeros(pad, "float32")])
            return (np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)]),
                    np.concatenate([labels, np.zeros(pad, labels.dtype)]), weights)

    return Batches()


def tf_train_stream(data, epochs, start_epoch, batch_size):
    """``data.train_stream`` as a ``tf.data.Dataset`` of batches of static size.

    For tf.distribute: it splits each global batch among the replicas only when the batch
    size is static; Keras' own wrapping of a generator leaves it unknown, and each of two
    workers then took every other batch and ran out of data (19 of 22 steps, measured).
    """
    tf = tensorflow()
    images = tf.TensorSpec((batch_size, *data.input_shape), tf.uint8)
    labels = tf.TensorSpec((batch_size,), tf.int64)
    return tf.data.Dataset.from_generator(
        lambda: data.train_stream(epochs, start_epoch),
        output_signature=(images, labels)).prefetch(tf.data.AUTOTUNE)


def small_pipelines(name, batch_size, seed=0, data_dir=None, cifar_archive=None,
                    steps_per_epoch=None, test_multiple=1):
    """Pipelines of an in-memory data set, without TensorFlow or ``tf.data``.

    ``train_stream(epochs, start_epoch)`` yields exactly
    ``(epochs - start_epoch) * steps_per_epoch`` batches of raw uint8 images
    (``drop_remainder``), in the order :func:`epoch_order` gives epoch e; the paper's
    augmentation (``Data.augmentation``) runs inside the training step, seeded by the
    step. The test batches are normalized here, once.
    """
    from keras_preact.layers.augment import InStepAugmentation

    info = DATASETS[name]
    x_train, y_train = load_arrays(name, "train", data_dir, cifar_archive)
    x_test, y_test = load_arrays(name, "test", data_dir, cifar_archive)
    mean, std = channel_stats(x_train)
    n = len(x_train)
    steps = _steps(n, batch_size, None, name)
    if steps_per_epoch is not None and steps_per_epoch > steps:
        raise ValueError(f"--steps-per-epoch {steps_per_epoch} exceeds the {steps} batches of "
                         f"{batch_size} in the {n} training images of {name}.")
    steps = steps_per_epoch or steps

    def train_stream(epochs, start_epoch=0):
        for epoch in range(start_epoch, max(epochs, start_epoch)):
            order = epoch_order(seed, epoch, n)[: steps * batch_size]
            for batch in order.reshape(steps, batch_size):
                yield x_train[batch], y_train[batch]

    from keras import ops

    test = _batches(ops.convert_to_numpy(_normalizer(mean, std)(x_test)), y_test, batch_size,
                    test_multiple)
    augmentation = InStepAugmentation(mean, std, x_train.shape[1:], flip=info.flip, seed=seed)
    return Data(name, info.classes, x_train.shape[1:], n, len(x_test), steps, mean, std,
                train_stream, test, augmentation)


def process_share(stream, index, count):
    """This process's share of each global batch of ``stream``: the ``index``-th of ``count``
    equal consecutive slices, so that the processes of a cluster together feed the same
    global batches, in the same order, as one process does."""
    for images, labels in stream:
        size = len(images) // count
        yield images[index * size:(index + 1) * size], labels[index * size:(index + 1) * size]


IMAGENET_TRAIN_SCALE = (256, 480)  # shorter side of the scale augmentation


def imagenet_train_crop(tf, image, size=224):
    """Scale augmentation: shorter side uniform in [256, 480], random crop, flip."""
    low, high = IMAGENET_TRAIN_SCALE
    image = resize_shorter(tf, image, tf.random.uniform([], low, high + 1, dtype=tf.int32))
    image = tf.image.random_crop(image, (size, size, 3))
    return tf.image.random_flip_left_right(image)


def imagenet_eval_crop(tf, image, size=224):
    """Center crop of ``size`` after resizing the shorter side (256 for 224, else ``size``)."""
    image = resize_shorter(tf, image, 256 if size == 224 else size)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    top, left = (h - size) // 2, (w - size) // 2
    return tf.ensure_shape(image[top:top + size, left:left + size, :], (size, size, 3))


def resize_shorter(tf, image, shorter):
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    ratio = tf.cast(shorter, tf.float32) / tf.minimum(h, w)
    new = (tf.cast(tf.math.ceil(h * ratio), tf.int32), tf.cast(tf.math.ceil(w * ratio), tf.int32))
    new = (tf.maximum(new[0], shorter), tf.maximum(new[1], shorter))
    return tf.image.resize(image, new, method="bilinear", antialias=True)


# The split sizes, where tensorflow-datasets does not know them (a mocked data set).
IMAGENET_TRAIN_EXAMPLES = 1_281_167
IMAGENET_VAL_EXAMPLES = 50_000


def _split_size(info, split, default):
    try:
        return int(info.splits[split].num_examples) or default
    except (KeyError, AttributeError, TypeError):
        return default


def imagenet_pipelines(batch_size, seed=0, data_dir=None, eval_size=224, steps_per_epoch=None):
    """Streaming ImageNet pipelines from tensorflow-datasets (manual download)."""
    tf = tensorflow()
    check_choice("eval crop", str(eval_size), ("224", "320"))
    train, info = load_tfds("imagenet2012", "train", data_dir, shuffle_files=True, with_info=True)
    test = load_tfds("imagenet2012", "validation", data_dir)
    n = _split_size(info, "train", IMAGENET_TRAIN_EXAMPLES)
    normalize = _normalizer(IMAGENET_MEAN, IMAGENET_STD)
    train = (train.shuffle(10_000, seed=seed)
             .map(lambda x, y: (normalize(imagenet_train_crop(tf, x)), y),
                  num_parallel_calls=tf.data.AUTOTUNE)
             .batch(batch_size, drop_remainder=True).repeat().prefetch(tf.data.AUTOTUNE))
    test = (test.map(lambda x, y: (normalize(imagenet_eval_crop(tf, x, eval_size)), y),
                     num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    return Data("imagenet2012", 1000, (224, 224, 3), n,
                _split_size(info, "validation", IMAGENET_VAL_EXAMPLES),
                _steps(n, batch_size, steps_per_epoch, "imagenet2012"),
                IMAGENET_MEAN, IMAGENET_STD, lambda epochs, start_epoch=0: train, test)


def make_data(name, batch_size, seed=0, data_dir=None, cifar_archive=None, eval_size=None,
              steps_per_epoch=None, test_multiple=1):
    """The pipelines of ``name`` (``cifar10``, ``cifar100``, ``imagenet2012``, ``digits``);
    ``test_multiple``: the in-memory test batches' sizes are padded to a multiple of it."""
    check_choice("dataset", name, DATASETS)
    if name == "imagenet2012":
        return imagenet_pipelines(batch_size, seed=seed, data_dir=data_dir,
                                  eval_size=eval_size or 224, steps_per_epoch=steps_per_epoch)
    return small_pipelines(name, batch_size, seed=seed, data_dir=data_dir,
                           cifar_archive=cifar_archive, steps_per_epoch=steps_per_epoch,
                           test_multiple=test_multiple)
