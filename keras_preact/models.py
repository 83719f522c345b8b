"""Network builders: the CIFAR and ImageNet residual networks of the paper.

Depths are data: ``CIFAR_UNITS_PER_STAGE`` (6n+2 basic, 9n+2 bottleneck) and
``IMAGENET_STAGES`` hold the configurations, two family builders turn a
configuration into a ``keras.Model``, and the named builders
(``PreActResNet164`` ...) only bind one. Every builder takes the
keras.applications arguments (``include_top, weights, input_tensor,
input_shape, pooling, classes, classifier_activation, name``) plus the paper's
options (``placement``, ``shortcut``, ``projection``, ...).

Layouts (the paper's appendix and the authors' code):

* CIFAR: 3x3 conv (16) stem, three stages of widths 16/32/64 (bottleneck
  outputs 64/128/256) at strides 1/2/2, global average pooling, dense.
  The stride sits on the first convolution of a unit (``stride_on="first"``,
  as in the authors' resnet-1k-layers code).
* ImageNet: 7x7/2 conv (64)-BN-ReLU stem, 3x3/2 max-pool, four stages of widths
  64/128/256/512 (bottleneck outputs 256...2048) at strides 1/2/2/2. The stride
  sits on the 3x3 convolution (``stride_on="3x3"``, as fb.resnet.torch's
  pre-ResNet). ``stem="cifar"`` swaps the stem for a 3x3/1 conv with no
  max-pool: the 32x32 PreActResNet-18 of CIFAR reproductions.
* Pre-activation placements (``full_preact``, ``relu_only_preact``): the
  first unit is activated once before the split (its shortcut sees the
  activated stem output; after the ImageNet stem, whose BN-ReLU already
  activates, the unit adds none), and an extra BN-ReLU follows the last
  addition, before pooling. The other placements keep the classic layout:
  conv-BN-ReLU stem and no extra activation at the end.
"""

import os

import keras
from keras import layers

from keras_preact._validation import check_choice, check_int
from keras_preact.shortcuts import he_normal_fan_out
from keras_preact.units import EXPANSION, FORMS, PLACEMENTS, STRIDE_ON, check_sync_bn

CIFAR_WIDTHS = (16, 32, 64)
CIFAR_STRIDES = (1, 2, 2)
# Residual units per stage for each form: depth = k * n + 2, k = layers per unit * 3.
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
STEMS = ("imagenet", "cifar")
POOLINGS = (None, "avg", "max")

# Defaults of each family: input shape, classes, which conv carries the stride.
FAMILY_DEFAULTS = {
    "cifar": dict(input_shape=(32, 32, 3), classes=10, stride_on="first"),
    "imagenet": dict(input_shape=(224, 224, 3), classes=1000, stride_on="3x3"),
    "imagenet_cifar_stem": dict(input_shape=(32, 32, 3), classes=10, stride_on="3x3"),
}


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


# -- argument checks ---------------------------------------------------------
def _check_weights(weights):
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"`weights` must be None or a file path, got {weights!r}.")
    path = os.fspath(weights)
    if not path.endswith((".weights.h5", ".keras")):
        raise ValueError(
            f"`weights` must be None or the path to a '.weights.h5' or '.keras' "
            f"file, got {weights!r}. No hosted pretrained weights exist yet."
        )
    if not os.path.isfile(path):
        raise ValueError(f"`weights` file not found: {path!r}.")
    return path


def _load_weights(model, path):
    if path.endswith(".keras"):
        source = keras.saving.load_model(path, compile=False, safe_mode=True)
        src, dst = source.get_weights(), model.weights
        mismatch = len(src) != len(dst) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in zip(src, dst)
        )
        if mismatch:
            raise ValueError(
                f"The weights in {path!r} (model {source.name!r}, {len(src)} arrays) "
                f"do not fit {model.name!r} ({len(dst)} arrays): build the same "
                "architecture (arch, placement, shortcut, classes) as the file."
            )
        model.set_weights(src)
    else:
        try:
            model.load_weights(path)
        except ValueError as e:
            raise ValueError(
                f"The weights in {path!r} do not fit {model.name!r}: {e}"
            ) from e


def _check_input_shape(input_shape, min_size):
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"`input_shape` must be (height, width, channels), got {input_shape!r}.")
    if len(shape) != 3 or shape[2] is None or shape[2] < 1:
        raise ValueError(
            f"`input_shape` must be (height, width, channels) with known channels, "
            f"got {input_shape!r}."
        )
    for d in shape[:2]:
        if d is not None and d < min_size:
            raise ValueError(
                f"Input size {shape[:2]} is too small: this network downsamples by "
                f"{min_size}, so height and width must each be at least {min_size}."
            )
    return shape


# -- the generic builder -----------------------------------------------------
def build_resnet(
    stage_units,
    widths,
    strides,
    form,
    stem,
    *,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    name="resnet",
    placement="full_preact",
    shortcut="identity",
    projection="B",
    stride_on="first",
    bn_momentum=0.9,
    bn_epsilon=1e-5,
    sync_bn=False,
    zero_init_residual=False,
    kernel_regularizer=None,
):
    """Build a residual network from a stage table. The named builders call this.

    Args:
        stage_units: residual units per stage, e.g. ``(18, 18, 18)``.
        widths: residual-function width of each stage.
        strides: stride of the first unit of each stage.
        form: ``"basic"`` or ``"bottleneck"``.
        stem: ``"cifar"`` (3x3/1 conv) or ``"imagenet"`` (7x7/2 conv, max-pool).
        (the rest): see the module docstring and ``ResidualUnit``.
    """
    form = check_choice("residual form", form, FORMS)
    stem = check_choice("stem", stem, STEMS)
    unit_cls = PLACEMENTS[check_choice("placement", placement, PLACEMENTS)]
    check_choice("stride_on", stride_on, STRIDE_ON)
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}. Valid choices: None, 'avg', 'max'.")
    if include_top:
        classes = check_int("classes", classes, minimum=1)
        if pooling is not None:
            raise ValueError(
                f"pooling={pooling!r} conflicts with include_top=True (the top "
                "already pools by global average). Use pooling=None with the "
                "top, or include_top=False with pooling='avg' or 'max'."
            )
    weights = _check_weights(weights)
    sync_bn = check_sync_bn(sync_bn)
    try:
        keras.activations.get(classifier_activation)
    except ValueError:
        raise ValueError(
            f"Unknown classifier_activation {classifier_activation!r}: use None (logits), "
            "'softmax' (the default) or another keras.activations name."
        ) from None
    preact_net = bool(unit_cls.preactivation)

    total_stride = (4 if stem == "imagenet" else 1)
    for s in strides:
        total_stride *= s
    if input_tensor is not None:
        if not keras.backend.is_keras_tensor(input_tensor):
            raise ValueError(
                "`input_tensor` must be a symbolic Keras tensor (from keras.Input "
                f"or another layer), got {type(input_tensor).__name__}."
            )
        inputs = input_tensor
        _check_input_shape(input_tensor.shape[1:], total_stride)
    else:
        input_shape = _check_input_shape(input_shape, total_stride)
        inputs = keras.Input(shape=input_shape, name="image")

    conv_kw = dict(
        use_bias=False,
        kernel_initializer=he_normal_fan_out(),
        kernel_regularizer=kernel_regularizer,
    )
    bn_kw = dict(momentum=bn_momentum, epsilon=bn_epsilon, synchronized=sync_bn)

    # Stem.
    x = inputs
    if stem == "imagenet":
        x = layers.ZeroPadding2D(3, name="stem_pad")(x)
        x = layers.Conv2D(widths[0], 7, strides=2, name="stem_conv", **conv_kw)(x)
        x = layers.BatchNormalization(name="stem_bn", **bn_kw)(x)
        x = layers.ReLU(name="stem_relu")(x)
        x = layers.ZeroPadding2D(1, name="pool_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
        first_preact = "none"
    else:
        x = layers.Conv2D(widths[0], 3, padding="same", name="stem_conv", **conv_kw)(x)
        if not preact_net:
            x = layers.BatchNormalization(name="stem_bn", **bn_kw)(x)
            x = layers.ReLU(name="stem_relu")(x)
        first_preact = "shared"

    # Residual stages.
    unit_kw = dict(
        form=form, stride_on=stride_on, shortcut=shortcut, projection=projection,
        bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, sync_bn=sync_bn,
        zero_init_residual=zero_init_residual,
        kernel_regularizer=kernel_regularizer,
    )
    for s, (units, width, stride) in enumerate(zip(stage_units, widths, strides), start=1):
        for u in range(1, units + 1):
            extra = {}
            if preact_net and s == 1 and u == 1:
                extra["preact"] = first_preact
            x = unit_cls(
                width, strides=stride if u == 1 else 1, name=f"stage{s}_unit{u}",
                **unit_kw, **extra,
            )(x)

    if preact_net:
        x = layers.BatchNormalization(name="post_bn", **bn_kw)(x)
        x = layers.ReLU(name="post_relu")(x)

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(
            classes, activation=classifier_activation, name="predictions",
            kernel_regularizer=kernel_regularizer,
        )(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        _load_weights(model, weights)
    return model


def _default_name(depth, placement, suffix=""):
    if placement == "full_preact":
        return f"preact_resnet{depth}{suffix}"
    return f"resnet{depth}{suffix}_{placement}"


def preact_resnet_cifar(depth, form="bottleneck", *, input_shape=None, classes=None,
                        name=None, stride_on=None, placement="full_preact", **kwargs):
    """A CIFAR-family network of depth 6n+2 (basic) or 9n+2 (bottleneck)."""
    units = cifar_stage_units(depth, form)
    defaults = FAMILY_DEFAULTS["cifar"]
    return build_resnet(
        units, CIFAR_WIDTHS, CIFAR_STRIDES, form, "cifar",
        input_shape=input_shape or defaults["input_shape"],
        classes=defaults["classes"] if classes is None else classes,
        stride_on=stride_on or defaults["stride_on"],
        name=name or _default_name(depth, check_choice("placement", placement, PLACEMENTS)),
        placement=placement, **kwargs,
    )


def preact_resnet_imagenet(depth, *, stem="imagenet", input_shape=None, classes=None,
                           name=None, stride_on=None, placement="full_preact", **kwargs):
    """An ImageNet-family network (18, 34, 50, 101, 152, 200); ``stem="cifar"``
    gives the 32x32 variant (3x3/1 stem, no max-pool, 10 classes by default)."""
    form, units = imagenet_stages(depth)
    stem = check_choice("stem", stem, STEMS)
    defaults = FAMILY_DEFAULTS["imagenet" if stem == "imagenet" else "imagenet_cifar_stem"]
    suffix = "" if stem == "imagenet" else "_cifar"
    return build_resnet(
        units, IMAGENET_WIDTHS, IMAGENET_STRIDES, form, stem,
        input_shape=input_shape or defaults["input_shape"],
        classes=defaults["classes"] if classes is None else classes,
        stride_on=stride_on or defaults["stride_on"],
        name=name or _default_name(depth, check_choice("placement", placement, PLACEMENTS), suffix),
        placement=placement, **kwargs,
    )


def _named_builder(family, depth, form=None):
    """A builder that binds one configuration and takes the applications arguments."""

    def builder(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=None, classifier_activation="softmax", name=None,
                placement="full_preact", shortcut="identity", **options):
        args = dict(
            include_top=include_top, weights=weights, input_tensor=input_tensor,
            input_shape=input_shape, pooling=pooling, classes=classes,
            classifier_activation=classifier_activation, name=name,
            placement=placement, shortcut=shortcut, **options,
        )
        if family == "cifar":
            return preact_resnet_cifar(depth, form, **args)
        return preact_resnet_imagenet(depth, **args)

    if family == "cifar":
        units = cifar_stage_units(depth, form)
        what = (f"CIFAR {form} network of depth {depth} ({units[0]} units per stage, "
                f"widths {'/'.join(str(w * EXPANSION[form]) for w in CIFAR_WIDTHS)}); "
                "input 32x32x3, 10 classes by default")
    else:
        form, units = IMAGENET_STAGES[depth]
        what = (f"ImageNet {form} network of depth {depth} (units per stage "
                f"{', '.join(map(str, units))}); input 224x224x3, 1000 classes by "
                "default; stem='cifar' gives the 32x32 variant")
    builder.__name__ = builder.__qualname__ = f"PreActResNet{depth}"
    builder.__doc__ = (
        f"Pre-activation ResNet-{depth}: the {what}.\n\n"
        "Takes the keras.applications arguments (include_top, weights, input_tensor,\n"
        "input_shape, pooling, classes, classifier_activation, name) and the paper's\n"
        "options: placement (default 'full_preact'), shortcut (default 'identity'),\n"
        "projection, stride_on, bn_momentum, bn_epsilon, sync_bn, zero_init_residual,\n"
        "kernel_regularizer (and stem for the ImageNet family).\n"
    )
    return builder


PreActResNet20 = _named_builder("cifar", 20, "basic")
PreActResNet32 = _named_builder("cifar", 32, "basic")
PreActResNet44 = _named_builder("cifar", 44, "basic")
PreActResNet56 = _named_builder("cifar", 56, "basic")
PreActResNet110 = _named_builder("cifar", 110, "basic")
PreActResNet1202 = _named_builder("cifar", 1202, "basic")
PreActResNet164 = _named_builder("cifar", 164, "bottleneck")
PreActResNet1001 = _named_builder("cifar", 1001, "bottleneck")
PreActResNet18 = _named_builder("imagenet", 18)
PreActResNet34 = _named_builder("imagenet", 34)
PreActResNet50 = _named_builder("imagenet", 50)
PreActResNet101 = _named_builder("imagenet", 101)
PreActResNet152 = _named_builder("imagenet", 152)
PreActResNet200 = _named_builder("imagenet", 200)
