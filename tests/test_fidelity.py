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


def put(layer, value):
    """Set ``layer``'s weights to a reference array (or a BN's tuple)."""
    layer.set_weights(list(value) if isinstance(value, tuple) else [value])


def units(model):
    """``(unit, "layer{stage}.{unit}")``: each residual unit and its name in Torch's models."""
    for unit in model.layers:
        if isinstance(unit, ResidualUnit):
            s, u = unit.name.removeprefix("stage").split("_unit")
            yield unit, f"layer{s}.{u}"


def load_reference_params(model, p):
    """Copy the reference's parameters into a keras_preact model, module by module."""
    put(model.get_layer("stem_conv"), p["stem.conv"])
    if "stem.bn" in p:
        put(model.get_layer("stem_bn"), p["stem.bn"])
    used = {"stem.conv", "last.bn", "fc.weight", "fc.bias"} | ({"stem.bn"} & set(p))
    for unit, name in units(model):
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


# -- the CIFAR PreActResNet-18s of reproductions (tests/cifar18_reference.py) -------------
def load_cifar18_params(model, p):
    """Copy the transcription's parameters (PyTorch's module names) into a keras_preact
    model: a unit's pre-activation BN is its ``bn1``, the BNs of its residual ``bn2``...,
    its projection ``shortcut``."""
    put(model.get_layer("stem_conv"), p["conv1"])
    used = {"conv1", "linear.weight", "linear.bias"}
    for unit, name in units(model):
        convs = [x for x in unit.branch if isinstance(x, layers.Conv2D)]
        bns = [x for x in unit.pre + unit.branch if isinstance(x, layers.BatchNormalization)]
        pairs = [(c, f"{name}.conv{i}") for i, c in enumerate(convs, 1)]
        pairs += [(b, f"{name}.bn{i}") for i, b in enumerate(bns, 1)]
        if unit.shortcut.proj is not None:
            pairs.append((unit.shortcut.proj, f"{name}.shortcut"))
        for layer, key in pairs:
            put(layer, p[key])
            used.add(key)
    model.get_layer("predictions").set_weights([p["linear.weight"], p["linear.bias"]])
    assert used == set(p), f"reference parameters not placed: {set(p) - used}"


def _cifar_variant(arch=None, **options):
    common = dict(input_shape=(None, None, 3), classifier_activation=None)
    model = kp.get_model(arch, **common) if arch else kp.PreActResNet50(**common, **options)
    # neither variant has a BN in its stem or head
    assert not {"stem_bn", "post_bn"} & {layer.name for layer in model.layers}
    return model


VARIANTS = [  # (transcription, depth, the network by --arch name or by options, sizes)
    ("option_a", 18, dict(arch="resnet18_cifar_option_a"), (32,)),
    ("pytorch_cifar", 18, dict(arch="resnet18_pytorch_cifar"), (32, 64)),
    ("pytorch_cifar", 50, dict(stem="cifar", classes=10, stem_activation=None,
                               head_activation=None, preact="auto"), (32, 64)),
]


@pytest.mark.parametrize("variant, depth, build, sizes", VARIANTS,
                         ids=["option_a-18", "pytorch_cifar-18", "pytorch_cifar-50"])
def test_the_cifar_reproductions_preact_resnets_equal_their_transcriptions(
        rng, variant, depth, build, sizes):
    import cifar18_reference as ref18

    p = ref18.random_params(rng, variant, depth)
    model = _cifar_variant(**build)
    load_cifar18_params(model, p)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == ref18.trainable_count(p)
    for size in sizes:
        x = rng.uniform(-1, 1, (2, size, size, 3))
        expected = (ref18.option_a(x, p) if variant == "option_a"
                    else ref18.pytorch_cifar(x, p, depth))
        got = np.asarray(model(x.astype("float32"), training=False), "float64")
        scale = np.abs(expected).max()
        assert np.abs(got - expected).max() <= 1e-5 * scale, (size, np.abs(got - expected).max())


def test_the_cifar_reproductions_parameter_counts():
    """(a): the issue's 10,999,114; (b): pytorch-cifar's PreActResNet18 as PyTorch counts it,
    11,171,146 (the option-A net plus its three 1x1 projections, 64*128 + 128*256 + 256*512),
    both counted on the transcriptions' parameters."""
    import cifar18_reference as ref18

    rng = np.random.default_rng(0)
    a, b = (ref18.trainable_count(ref18.random_params(rng, v)) for v in ("option_a", "pytorch_cifar"))
    assert a == 10_999_114 and b == 11_171_146 == a + 64 * 128 + 128 * 256 + 256 * 512
    assert kp.model_info("resnet18_cifar_option_a")["params"] == a
    assert kp.model_info("resnet18_pytorch_cifar")["params"] == b
