"""The paper's vocabulary as plain data: placements, shortcuts, projections and depths.

Everything a command line or a configuration names is defined here once, without
importing Keras, so that ``--help`` and argument checks never load a backend. The
layers (``units``, ``shortcuts``) and builders (``models``) bind these names to code.

* ``PLACEMENT_FIGURES``: the five residual units of Fig. 4 (Table 2).
* ``SHORTCUT_OPTIONS``: the shortcut variants of Fig. 2 (Table 1) and their options.
* ``PROJECTIONS``: how a change of shape is met ("A" zero-pad, "B" project where the
  shape changes, "C" project everywhere).
* The CIFAR (6n+2 / 9n+2) and ImageNet (18 ... 200) stage tables.
* ``LAYOUTS``: the ImageNet layouts (the paper's and those of the published
  pretrained pre-activation ResNets) and ``IMAGENET_WEIGHTS``, those weights.
"""

import numbers
import os

from keras_preact.vocab._validation import check_choice, check_float

# This package's version (``keras_preact.__version__``; exports record it). Plain data here,
# where every part may read it without importing the package's facade.
VERSION = "0.2.0"

# BatchNormalization as in the authors' Torch code (nn.SpatialBatchNormalization).
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5
FORMS = ("basic", "bottleneck")
EXPANSION = {"basic": 1, "bottleneck": 4}
STEMS = ("imagenet", "cifar")
PROJECTIONS = ("A", "B", "C")
# What may follow the stem's convolution and the last unit (the builders' stem_activation and
# head_activation): BN then ReLU, ReLU only, or nothing (None). "auto", their default: the
# network's usual form (the pre-activation nets: no BN-ReLU after the CIFAR stem, BN-ReLU
# after the ImageNet stem and after the last unit; the other placements: conv-BN-ReLU stems
# and nothing after the last addition).
ACTIVATIONS = ("auto", "bn_relu", "relu", None)

PLACEMENT_FIGURES = {
    "original": "4(a)",
    "bn_after_addition": "4(b)",
    "relu_before_addition": "4(c)",
    "relu_only_preact": "4(d)",
    "full_preact": "4(e)",
}
PREACTIVATED = ("relu_only_preact", "full_preact")  # the placements with a pre-activation
SHORTCUT_FIGURES = {
    "identity": "2(a)",
    "constant_scaling": "2(b)",
    "exclusive_gating": "2(c)",
    "shortcut_only_gating": "2(d)",
    "conv1x1": "2(e)",
    "dropout": "2(f)",
}
# Each variant's options and their defaults (the paper's values).
SHORTCUT_OPTIONS = {
    "identity": {},
    "constant_scaling": {"scale": 0.5, "scale_residual": False},
    "exclusive_gating": {"gate_bias": -6.0},
    "shortcut_only_gating": {"gate_bias": -6.0},
    "conv1x1": {},
    "dropout": {"rate": 0.5},
}

# The named networks (``PreActResNet<depth>``, ``--arch resnet<depth>``): the paper's CIFAR
# depths by residual form, and the ImageNet depths of IMAGENET_STAGES below.
CIFAR_DEPTHS = {20: "basic", 32: "basic", 44: "basic", 56: "basic", 110: "basic",
                1202: "basic", 164: "bottleneck", 1001: "bottleneck"}
# Each family's defaults: input shape, classes, which conv carries the stride
# ("imagenet_cifar_stem": the ImageNet networks with stem="cifar", 32x32 inputs).
FAMILY_DEFAULTS = {
    "cifar": dict(input_shape=(32, 32, 3), classes=10, stride_on="first"),
    "imagenet": dict(input_shape=(224, 224, 3), classes=1000, stride_on="3x3"),
    "imagenet_cifar_stem": dict(input_shape=(32, 32, 3), classes=10, stride_on="3x3"),
}

CIFAR_WIDTHS = (16, 32, 64)
CIFAR_STRIDES = (1, 2, 2)
# Layers per unit times three stages: depth = k * n + 2.
CIFAR_UNITS_PER_STAGE = {"basic": 6, "bottleneck": 9}
IMAGENET_WIDTHS = (64, 128, 256, 512)
IMAGENET_STRIDES = (1, 2, 2, 2)
IMAGENET_STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


# The ImageNet networks' layouts (the builders' ``layout=``): the paper's, and the two
# under which pretrained pre-activation ResNets are published. Each says exactly where it
# departs from the paper; the units are the same layer classes in all three.
LAYOUTS = {
    "paper": (
        "the authors' fb.resnet.torch preresnet.lua: 7x7/2 conv-BN-ReLU stem and 3x3/2 "
        "max-pool; the stride on the 3x3 conv of the first unit of stages 2-4, padded one "
        "pixel on each side; no conv biases; BN epsilon 1e-5, momentum 0.9"),
    "timm": (
        "timm resnetv2 and keras-hub ResNetBackbone(use_pre_activation=True): as the paper, "
        "except that the stem has no BN-ReLU (7x7/2 conv, then the 3x3/2 max-pool padded "
        "with -inf); the first unit's BN-ReLU comes after the pool and is shared with its "
        "projection"),
    "keras_applications": (
        "keras.applications ResNet50V2/101V2/152V2 (the TF-slim layout): the stem conv has a "
        "bias and no BN-ReLU (its raw output is zero-padded for the max-pool); the stride "
        "sits on the last unit of stages 1-3 (stage 4 is unstrided), whose shortcut "
        "subsamples the raw input (a 1x1/2 max-pool); the projections and the last 1x1 conv "
        "of every unit have biases; BN epsilon 1.001e-5, momentum 0.99"),
}
LAYOUT_BN = {  # (momentum, epsilon) of each layout
    "paper": (BN_MOMENTUM, BN_EPSILON),
    "timm": (BN_MOMENTUM, BN_EPSILON),
    "keras_applications": (0.99, 1.001e-5),
}

# keras.applications' published ResNet V2 ImageNet weights (layout "keras_applications"):
# file names and MD5 hashes as keras.applications itself fetches them
# (keras/src/applications/resnet.py; a test pins them), the preprocessing they expect
# ((x - 127.5) / 127.5, i.e. [-1, 1]) and the accuracy keras.io publishes for them
# (single 224x224 crop; the source's figures, not measured here).
IMAGENET_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
IMAGENET_WEIGHTS = {
    50: {"source": "ResNet50V2", "name": "resnet50v2",
         "md5": ("3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917"),
         "top1": 76.0, "top5": 93.0},
    101: {"source": "ResNet101V2", "name": "resnet101v2",
          "md5": ("6343647c601c52e1368623803854d971", "c0ed64b8031c3730f411d2eb4eea35b5"),
          "top1": 77.2, "top5": 93.8},
    152: {"source": "ResNet152V2", "name": "resnet152v2",
          "md5": ("a49b44d1979771252814e80f8ec446f9", "ed17cf2e0169df9d443503ef94b23b33"),
          "top1": 78.0, "top5": 94.2},
}
KERAS_APPLICATIONS_NORMALIZATION = ((127.5,) * 3, (127.5,) * 3)  # (mean, std), 0-255 pixels


def imagenet_weights_file(depth, include_top=True):
    """(file name, md5) of keras.applications' published weights for ``depth``."""
    if depth not in IMAGENET_WEIGHTS:
        raise ValueError(
            f"weights='imagenet' exists for depths {', '.join(map(str, IMAGENET_WEIGHTS))} "
            f"(keras.applications' ResNet V2 weights), not ResNet-{depth}.")
    entry = IMAGENET_WEIGHTS[depth]
    suffix = "" if include_top else "_notop"
    return (f"{entry['name']}_weights_tf_dim_ordering_tf_kernels{suffix}.h5",
            entry["md5"][0 if include_top else 1])


def is_keras_applications_file(weights):
    """Whether ``weights`` names keras.applications' own (legacy HDF5) weights file."""
    return (isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith(".h5")
            and not os.fspath(weights).endswith(".weights.h5"))


def cifar_stage_units(depth, form="bottleneck"):
    """Units per stage of a CIFAR net: ``(n, n, n)`` for depth 6n+2 / 9n+2."""
    form = check_choice("residual form", form, FORMS)
    k = CIFAR_UNITS_PER_STAGE[form]
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < k + 2 or (depth - 2) % k:
        examples = ", ".join(str(k * n + 2) for n in (1, 2, 3, 18, 111 if k == 9 else 200))
        raise ValueError(
            f"A CIFAR {form} ResNet has depth {k}n+2 with n >= 1 "
            f"(e.g. {examples}), got {depth!r}."
        )
    return ((depth - 2) // k,) * 3


def imagenet_stages(depth):
    """``(form, units per stage)`` of an ImageNet net of the given depth."""
    if depth not in IMAGENET_STAGES:
        raise ValueError(
            f"Unknown ImageNet ResNet depth {depth!r}. Valid depths: "
            f"{', '.join(map(str, IMAGENET_STAGES))}."
        )
    return IMAGENET_STAGES[depth]


# -- shortcut specifications --------------------------------------------------------
def resolve_shortcut(spec):
    """Normalize a shortcut spec to a JSON-able dict ``{"name": ..., **options}``.

    ``spec`` is a variant name (``"exclusive_gating"``), a dict with a ``"name"``
    key and any of that variant's options, or the command-line form
    ``"constant_scaling:scale=0.5,scale_residual=true"``. Names, option names and
    option types are checked here; each layer checks the ranges of its own values.
    """
    if isinstance(spec, str):
        spec = _parse(spec)
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(
            "A shortcut is a name or a dict with a 'name' key, got "
            f"{spec!r}. Valid names: {', '.join(SHORTCUT_OPTIONS)}."
        )
    name = check_choice("shortcut", spec["name"], SHORTCUT_OPTIONS)
    defaults = SHORTCUT_OPTIONS[name]
    unknown = sorted(set(spec) - {"name"} - set(defaults))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for shortcut {name!r}. "
            f"Valid options: {', '.join(defaults) or 'none'}."
        )
    resolved = {"name": name}
    for key, default in defaults.items():
        value = spec.get(key, default)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"Shortcut option {key!r} must be true or false, got {value!r}.")
        else:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"Shortcut option {key!r} must be a number, got {value!r}.")
            value = check_float(key, value)
        resolved[key] = value
    return resolved


def parse_shortcut(text):
    """The resolved spec of the command-line form ``NAME`` or ``NAME:key=value,key=value``
    (values: numbers, true/false)."""
    return resolve_shortcut(_parse(text))


def _parse(text):
    name, _, rest = text.partition(":")
    spec = {"name": name.strip()}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(
                f"Bad shortcut option {item!r} in {text!r}; write NAME:key=value,key=value "
                "(e.g. 'constant_scaling:scale=0.5,scale_residual=true')."
            )
        key = key.strip()
        if key in spec:
            raise ValueError(f"{key!r} is given twice in {text!r}: " + (
                "the name goes before the ':' only." if key == "name" else "give it once."))
        low = value.strip().lower()
        if low in ("true", "false"):
            parsed = low == "true"
        else:
            try:
                parsed = float(low)
            except ValueError:
                raise ValueError(f"Shortcut option {key!r} needs a number or "
                                 f"true/false, got {value!r}.") from None
        spec[key] = parsed
    return spec


def format_shortcut(spec):
    """The command-line form of a resolved spec (its options only where not default)."""
    spec = resolve_shortcut(spec)
    changed = [f"{k}={str(v).lower() if isinstance(v, bool) else f'{v:g}'}"
               for k, v in spec.items()
               if k != "name" and v != SHORTCUT_OPTIONS[spec["name"]][k]]
    return spec["name"] + (":" + ",".join(changed) if changed else "")
