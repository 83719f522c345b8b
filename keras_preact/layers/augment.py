"""The paper's CIFAR augmentation as a Keras layer, run inside the compiled training step.

:class:`PadCropFlip` pads 4 zeros on each side, crops a random window of the input's size
and flips it horizontally with probability 1/2, each image on its own (as fb.resnet.torch
does; Keras 3.15's ``RandomCrop`` draws one window per batch). It uses only ``keras.ops``
and ``keras.random``, so the augmentation runs on the accelerator on every backend.

:class:`InStepAugmentation` is what training runs on each uint8 batch inside the step:
the training normalization (:func:`keras_preact.layers.preprocessing.normalization_layer`), then
:class:`PadCropFlip` applied statelessly with the seed state ``(seed, counter)``. The
counter is the training step (times the replica count, plus the replica), so a batch's
augmentation depends only on the run's seed and the step: a resumed run draws exactly
what an uninterrupted one draws.
"""

import keras
from keras import ops

from keras_preact.vocab._validation import check_int
from keras_preact.layers.preprocessing import normalization_layer


@keras.saving.register_keras_serializable(package="keras_preact")
class PadCropFlip(keras.layers.Layer):
    """Zero-pad ``padding`` pixels, random crop to the input size, random horizontal flip.

    Each image gets its own window and flip. Identity at inference. The inputs are
    normalized images (NHWC), so the zero padding is the training set's mean. One
    ``keras.random.uniform`` draw per call holds every random choice of the batch.
    """

    def __init__(self, padding=4, flip=True, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.padding = check_int("padding", padding, minimum=0)
        self.flip = bool(flip)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training or not (self.padding or self.flip):
            return images
        p = self.padding
        batch, height, width, channels = ops.shape(images)
        draw = keras.random.uniform((batch, 3), seed=self.seed_generator)
        top = ops.minimum(ops.cast(draw[:, 0] * (2 * p + 1), "int32"), 2 * p)
        left = ops.minimum(ops.cast(draw[:, 1] * (2 * p + 1), "int32"), 2 * p)
        columns = ops.arange(width, dtype="int32")[None, :]
        if self.flip:
            columns = ops.where(draw[:, 2:] < 0.5, width - 1 - columns, columns)
        rows = top[:, None] + ops.arange(height, dtype="int32")[None, :]  # (batch, height)
        columns = left[:, None] + columns  # (batch, width), in the padded image
        padded = ops.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
        window = ops.take_along_axis(
            padded, ops.broadcast_to(rows[:, :, None, None], (batch, height, width + 2 * p,
                                                               channels)), axis=1)
        return ops.take_along_axis(
            window, ops.broadcast_to(columns[:, None, :, None], (batch, height, width, channels)),
            axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "flip": self.flip,
                "seed": self.seed}


class InStepAugmentation:
    """Normalize and augment a uint8 batch inside the training step, as a pure function of
    ``(seed, counter)``: ``augmentation(images, counter)``."""

    def __init__(self, mean, std, image_shape, flip=True, padding=4, seed=0):
        self.seed = int(seed)
        self.normalize = normalization_layer(mean, std)
        self.crop = PadCropFlip(padding, flip, seed=self.seed, name="pad_crop_flip")
        self.crop.build((None, *image_shape))

    def __call__(self, images, counter):
        state = self.crop.seed_generator.state
        seed = ops.convert_to_tensor([self.seed, 0], dtype=state.dtype)
        seed = seed + ops.cast(counter, state.dtype) * ops.convert_to_tensor([0, 1], state.dtype)
        augmented, _ = self.crop.stateless_call([], [seed], self.normalize(images), training=True)
        return augmented
