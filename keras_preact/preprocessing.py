"""The training normalisation as a layer, so an exported model takes raw pixels.

Training feeds ``(x - mean) / std`` per channel, with ``x`` on the 0-255 scale
(``keras_preact.data``). :class:`Normalize` applies exactly that to raw uint8
or float images; :func:`serving_model` puts it (and an optional softmax) around
a trained network with named inputs and outputs. Only ``keras`` and
``keras.ops``: the wrapped model runs on every backend and saves as ``.keras``.
"""

import keras
from keras import ops

from keras_preact._validation import check_choice

INPUT_NAME = "images"
LOGITS = "logits"
PROBABILITIES = "probabilities"
INPUT_DTYPES = ("float32", "uint8")


@keras.saving.register_keras_serializable(package="keras_preact")
class Normalize(keras.layers.Layer):
    """``(cast(x, float32) - mean) / std`` per channel; ``x`` raw pixels (0-255)."""

    def __init__(self, mean, std, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(
                f"mean and std need one value per channel, got {len(self.mean)} and "
                f"{len(self.std)}."
            )
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}.")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels != len(self.mean):
            raise ValueError(
                f"Normalize has statistics for {len(self.mean)} channels, the input has "
                f"{channels}."
            )
        self.built = True

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        mean = ops.convert_to_tensor(self.mean, self.compute_dtype)
        std = ops.convert_to_tensor(self.std, self.compute_dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, images):
        return keras.KerasTensor(images.shape, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}


def serving_model(model, normalisation=None, softmax=True, input_dtype="float32", name=None):
    """Wrap ``model`` (logits out) for deployment.

    The result takes ``images`` (NHWC, raw pixels when ``normalisation`` is a
    ``(mean, std)`` pair, otherwise whatever ``model`` takes) and returns a dict
    ``{"logits": ..., "probabilities": ...}`` (``probabilities`` only with
    ``softmax``). ``model`` must output logits (``classifier_activation=None``).
    """
    check_choice("input_dtype", input_dtype, INPUT_DTYPES)
    if normalisation is None and input_dtype != "float32":
        raise ValueError(
            "input_dtype='uint8' needs the preprocessing inside the model (raw pixels); "
            "without it the network takes normalised float32 inputs."
        )
    inputs = keras.Input(model.input_shape[1:], dtype=input_dtype, name=INPUT_NAME)
    x = inputs
    if normalisation is not None:
        mean, std = normalisation
        x = Normalize(mean, std, name="normalize")(x)
    logits = keras.layers.Identity(name=LOGITS, dtype="float32")(model(x))
    outputs = {LOGITS: logits}
    if softmax:
        outputs[PROBABILITIES] = keras.layers.Softmax(name=PROBABILITIES, dtype="float32")(logits)
    return keras.Model(inputs, outputs, name=name or f"{model.name}_serving")
