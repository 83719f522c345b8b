"""The paper's CIFAR augmentation inside the training step (every backend)."""

import keras
import numpy as np
import pytest

from keras_preact.augment import InStepAugmentation, PadCropFlip

from conftest import BACKEND, to_np


def _windows(image, padding):
    """Every (top, left, flipped) window of ``image`` after zero padding, by NumPy."""
    h, w, _ = image.shape
    padded = np.pad(image, [(padding, padding), (padding, padding), (0, 0)])
    return {(top, left, flip): (window[:, ::-1] if flip else window)
            for top in range(2 * padding + 1) for left in range(2 * padding + 1)
            for flip in (False, True)
            for window in [padded[top:top + h, left:left + w]]}


def _which_window(out, image, padding):
    found = [key for key, window in _windows(image, padding).items()
             if np.array_equal(window, out)]
    assert len(found) == 1, f"not exactly one window of the padded image: {found}"
    return found[0]


def test_each_image_gets_its_own_uniform_window_and_flip():
    # Distinct positive pixels: every window and flip of an image is told apart.
    rng = np.random.default_rng(0)
    images = rng.permutation(600 * 8 * 6 * 2).reshape(600, 8, 6, 2).astype("float32") + 1
    out = to_np(PadCropFlip(padding=2, seed=5)(images, training=True))
    assert out.shape == images.shape
    chosen = [_which_window(o, x, 2) for o, x in zip(out, images)]
    tops, lefts, flips = (np.array(c) for c in zip(*chosen))
    # 600 draws of 5 equally likely offsets: each seen 120 +- 4.5 standard deviations.
    for offsets in (tops, lefts):
        assert all(66 <= np.sum(offsets == k) <= 174 for k in range(5)), np.bincount(offsets)
    assert 0.4 < flips.mean() < 0.6
    assert len(set(chosen[:40])) > 20  # not one window for the whole batch


def test_options_and_inference():
    images = np.random.default_rng(1).normal(size=(64, 5, 5, 3)).astype("float32")
    np.testing.assert_array_equal(to_np(PadCropFlip(seed=0)(images, training=False)), images)
    unflipped = to_np(PadCropFlip(padding=1, flip=False, seed=0)(images, training=True))
    assert not any(_which_window(o, x, 1)[2] for o, x in zip(unflipped, images))
    only_flip = to_np(PadCropFlip(padding=0, seed=0)(images, training=True))
    flipped = [np.array_equal(o, x[:, ::-1]) for o, x in zip(only_flip, images)]
    assert all(f or np.array_equal(o, x) for f, o, x in zip(flipped, only_flip, images))
    assert 0 < np.mean(flipped) < 1
    with pytest.raises(ValueError, match="`padding` must be >= 0"):
        PadCropFlip(padding=-1)


def test_serialisable():
    layer = PadCropFlip(padding=3, flip=False, seed=7, name="aug")
    model = keras.Sequential([keras.Input((8, 8, 3)), layer])
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    restored = clone.get_layer("aug")
    assert (restored.padding, restored.flip, restored.seed) == (3, False, 7)


def test_in_step_augmentation_is_a_function_of_seed_and_counter():
    images = np.random.default_rng(2).integers(0, 256, (16, 32, 32, 3)).astype("uint8")
    mean, std = (120.0, 110.0, 100.0), (60.0, 55.0, 50.0)
    augmentation = InStepAugmentation(mean, std, (32, 32, 3), seed=3)
    first = to_np(augmentation(images, 7))
    np.testing.assert_array_equal(first, to_np(augmentation(images, 7)))
    np.testing.assert_array_equal(
        first, to_np(InStepAugmentation(mean, std, (32, 32, 3), seed=3)(images, 7)))
    assert not np.array_equal(first, to_np(augmentation(images, 8)))
    assert not np.array_equal(
        first, to_np(InStepAugmentation(mean, std, (32, 32, 3), seed=4)(images, 7)))
    # Normalized first, then padded: the padding is the mean, i.e. zero.
    normalized = (images.astype("float32") - np.float32(mean)) / np.float32(std)
    for out, x in zip(first, normalized):
        _which_window(np.round(out, 4), np.round(x, 4), 4)
    # Traced (as inside the training step), it draws what it draws eagerly (XLA may fuse the
    # normalization's multiply-add: one rounding apart, a different window would be O(1) off).
    # (torch's training step runs eagerly: jit_compile is off there unless asked for.)
    if BACKEND == "jax":
        import jax

        traced = jax.jit(augmentation)(images, 7)
        np.testing.assert_allclose(to_np(traced), first, rtol=0, atol=1e-6)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        traced = tf.function(augmentation)(images, tf.constant(7, tf.int64))
        np.testing.assert_allclose(to_np(traced), first, rtol=0, atol=1e-6)
