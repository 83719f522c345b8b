"""The default networks are the authors' networks: outputs equal to an independent
NumPy transcription of fb.resnet.torch ``preresnet.lua`` (tests/preresnet_reference.py),
at even input sizes (where Keras' "same" padding of a strided 3x3 would differ) and
odd ones."""

import numpy as np
import pytest
from keras import layers

import keras_preact as kp
import preresnet_reference as ref
from keras_preact.units import ResidualUnit


def load_reference_params(model, p):
    """Copy the reference's parameters into a keras_preact model, module by module."""
    def put(layer, value):
        layer.set_weights(list(value) if isinstance(value, tuple) else [value])

    put(model.get_layer("stem_conv"), p["stem.conv"])
    if "stem.bn" in p:
        put(model.get_layer("stem_bn"), p["stem.bn"])
    used = {"stem.conv", "last.bn", "fc.weight", "fc.bias"} | ({"stem.bn"} & set(p))
    for unit in model.layers:
        if not isinstance(unit, ResidualUnit):
            continue
        s, u = unit.name.removeprefix("stage").split("_unit")
        name = f"layer{s}.{u}"
        convs = [x for x in unit.branch if isinstance(x, layers.Conv2D)]
        bns = [x for x in unit.branch if isinstance(x, layers.BatchNormalization)]
        pairs = [(c, f"{name}.conv{i}") for i, c in enumerate(convs, 1)]
        pairs += [(b, f"{name}.bn{i}") for i, b in enumerate(bns, 1)]
        pairs += [(x, f"{name}.preact") for x in unit.pre if x.weights]
        if unit.shortcut.proj is not None:
            pairs.append((unit.shortcut.proj, f"{name}.shortcut"))
        for layer, key in pairs:
            put(layer, p[key])
            used.add(key)
    put(model.get_layer("post_bn"), p["last.bn"])
    model.get_layer("predictions").set_weights([p["fc.weight"], p["fc.bias"]])
    assert used == set(p), f"reference parameters not placed: {set(p) - used}"


CASES = [  # (family, depth, projection / shortcutType, sizes)
    ("cifar", 20, "A", (32, 33)),
    ("cifar", 20, "B", (32,)),
    ("imagenet", 18, "B", (64, 65)),
    ("imagenet", 50, "B", (64,)),
]


@pytest.mark.parametrize("family, depth, shortcut_type, sizes", CASES)
def test_default_networks_equal_the_authors_code(rng, family, depth, shortcut_type, sizes):
    classes = 10 if family == "cifar" else 5
    p = ref.random_params(rng, family, depth, shortcut_type, classes)
    builder = getattr(kp, f"PreActResNet{depth}")
    model = builder(input_shape=(None, None, 3), classes=classes, classifier_activation=None,
                    projection=shortcut_type)
    load_reference_params(model, p)
    for size in sizes:
        x = rng.uniform(-1, 1, (2, size, size, 3))
        expected = getattr(ref, family)(x, depth, p, shortcut_type)
        got = np.asarray(model(x.astype("float32"), training=False), "float64")
        scale = np.abs(expected).max()
        assert np.abs(got - expected).max() <= 1e-5 * scale, (size, np.abs(got - expected).max())
