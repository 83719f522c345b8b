"""The training normalization as a layer, so an exported model takes raw pixels.

Training feeds ``(x - mean) / std`` per channel, with ``x`` on the 0-255 scale.
:func:`normalization_layer` is that arithmetic, once, as a Keras layer: the input
pipelines (``keras_preact.data``, inside ``tf.data``), the serving models and the
export checks all use it. :func:`serving_model` puts it
(and an optional softmax) around a trained network with named inputs and
outputs. Only ``keras`` (imported when used): the wrapped model runs on every
backend and saves as ``.keras``.
"""

import numpy as np

from keras_preact.vocab._validation import check_choice

INPUT_NAME = "images"
LOGITS = "logits"
PROBABILITIES = "probabilities"
INPUT_DTYPES = ("float32", "uint8")


def normalization_layer(mean, std, name="normalize"):
    """``(float32(x) - mean) / std`` per channel, for one image or a batch, any dtype.

    Keras' ``Rescaling`` with ``scale = 1 / std`` and ``offset = -mean / std``: it
    works inside ``tf.data`` on every backend and exports everywhere. (Keras'
    ``Normalization`` would say it directly, but its mean and variance are eager
    tensors captured by the traced graph, which tf2onnx 1.17 turns into required
    ONNX inputs: "Required inputs (['.../normalize_1/Sub/y:0', ...]) are missing
    from input feed", measured with Keras 3.15.) Kept float32 under a
    mixed-precision policy.
    """
    mean = tuple(float(m) for m in mean)
    std = tuple(float(s) for s in std)
    if len(mean) != len(std) or not mean:
        raise ValueError(f"mean and std need one value per channel, got {len(mean)} and "
                         f"{len(std)}.")
    if min(std) <= 0:
        raise ValueError(f"std must be positive, got {std}.")
    import keras

    return keras.layers.Rescaling(scale=[1.0 / s for s in std],
                                  offset=[-m / s for m, s in zip(mean, std)],
                                  name=name, dtype="float32")


def split_normalization(model):
    """``(network, (mean, std))`` of a model that starts with :func:`normalization_layer`
    (a ``Rescaling`` named ``normalize`` on its input, as the converted pretrained
    models of ``keras_preact.interop.convert`` do), else ``(model, None)``. ``network`` is the
    rest of the model (shared layers, same weights), taking normalized inputs."""
    import keras

    layer = next((x for x in model.layers if x.name == "normalize"), None)
    if (not isinstance(layer, keras.layers.Rescaling) or len(model.inputs) != 1
            or layer.input is not model.inputs[0]):
        return model, None
    scale = np.broadcast_to(np.asarray(layer.scale, "float64"), (3,))
    offset = np.broadcast_to(np.asarray(layer.offset, "float64"), (3,))
    mean, std = -offset / scale, 1.0 / scale
    network = keras.Model(layer.output, model.outputs[0], name=model.name)
    return network, (tuple(float(m) for m in mean), tuple(float(s) for s in std))


def serving_model(model, normalization=None, softmax=True, input_dtype="float32",
                  input_shape=None, name=None):
    """Wrap ``model`` (logits out) for deployment.

    The result takes ``images`` (NHWC, raw pixels when ``normalization`` is a
    ``(mean, std)`` pair, otherwise whatever ``model`` takes) and returns a dict
    ``{"logits": ..., "probabilities": ...}`` (``probabilities`` only with
    ``softmax``). ``model`` must output logits (``classifier_activation=None``).
    ``input_shape`` fixes the image size of a model that takes any.
    """
    import keras

    check_choice("input_dtype", input_dtype, INPUT_DTYPES)
    if normalization is None and input_dtype != "float32":
        raise ValueError(
            "input_dtype='uint8' needs the preprocessing inside the model (raw pixels); "
            "without it the network takes normalized float32 inputs."
        )
    inputs = keras.Input(input_shape or model.input_shape[1:], dtype=input_dtype, name=INPUT_NAME)
    x = inputs
    if normalization is not None:
        mean, std = normalization
        x = normalization_layer(mean, std)(x)
    logits = keras.layers.Identity(name=LOGITS, dtype="float32")(model(x))
    outputs = {LOGITS: logits}
    if softmax:
        outputs[PROBABILITIES] = keras.layers.Softmax(name=PROBABILITIES, dtype="float32")(logits)
    return keras.Model(inputs, outputs, name=name or f"{model.name}_serving")
