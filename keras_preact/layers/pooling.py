"""Max-pooling as Torch and timm pad it (the stem of timm's and keras-hub's layout)."""

import keras
from keras import layers

from keras_preact.vocab._validation import check_int


@keras.saving.register_keras_serializable(package="keras_preact")
class PaddedMaxPooling2D(layers.Layer):
    """Max-pooling over an input padded with -inf on every side (Torch's and timm's
    ``MaxPool2d(k, s, padding)``): padding never wins the max, whatever the sign of
    the input. (Keras' ``padding="same"`` pads only the bottom and right of an even
    input; ``ZeroPadding2D`` is exact only after a ReLU.)"""

    def __init__(self, pool_size=3, strides=2, padding=1, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = check_int("pool_size", pool_size, minimum=1)
        self.strides = check_int("strides", strides, minimum=1)
        self.padding = check_int("padding", padding, minimum=0)

    def call(self, x):
        p = self.padding
        x = keras.ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=float("-inf"))
        return keras.ops.max_pool(x, self.pool_size, self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        size = [None if d is None else (d + 2 * self.padding - self.pool_size) // self.strides + 1
                for d in input_shape[1:3]]
        return (input_shape[0], *size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}
