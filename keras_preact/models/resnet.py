"""Network builders: the CIFAR and ImageNet residual networks of the paper.

Depths are data: ``keras_preact.vocab.catalog`` holds the configurations
(``CIFAR_UNITS_PER_STAGE``: 6n+2 basic, 9n+2 bottleneck; ``IMAGENET_STAGES``), two family builders turn a
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
* ImageNet ``layout=``: ``"paper"`` (the default, above), ``"timm"`` (timm's
  resnetv2 and keras-hub's pre-activation ResNetBackbone) or
  ``"keras_applications"`` (keras.applications' ResNet50V2/101V2/152V2); each is
  described, with where it departs from the paper, in
  ``keras_preact.vocab.catalog.LAYOUTS``. ``weights="imagenet"`` loads keras.applications'
  published weights into the ``"keras_applications"`` layout (depths 50, 101, 152).
* Pre-activation placements (``full_preact``, ``relu_only_preact``): the
  first unit is activated once before the split (its shortcut sees the
  activated stem output; after the ImageNet stem, whose BN-ReLU already
  activates, the unit adds none), and an extra BN-ReLU follows the last
  addition, before pooling. The other placements keep the classic layout:
  conv-BN-ReLU stem and no extra activation at the end.
"""

import inspect
import json
import math
import os
import warnings
import zipfile

import keras
from keras import layers

from keras_preact.layers import compat
from keras_preact.vocab._validation import check_choice, check_int
from keras_preact.vocab.catalog import (  # noqa: F401 - the depth tables are public here too
    ACTIVATIONS,
    CIFAR_DEPTHS,
    CIFAR_STRIDES,
    CIFAR_UNITS_PER_STAGE,
    CIFAR_WIDTHS,
    EXPANSION,
    FAMILY_DEFAULTS,
    FORMS,
    IMAGENET_STAGES,
    IMAGENET_STRIDES,
    IMAGENET_WIDTHS,
    IMAGENET_WEIGHTS,
    LAYOUT_BN,
    LAYOUTS,
    STEMS,
    is_keras_applications_file,
    cifar_stage_units,
    imagenet_stages,
    resolve_shortcut,
)
from keras_preact.layers.preprocessing import normalization_layer
from keras_preact.models.registry import pretrained_source
from keras_preact.layers.pooling import PaddedMaxPooling2D
from keras_preact.layers.scanned import (
    ScannedUnits,
    assign_unrolled,
    runs,
    scanned_name,
    unrolled_variables,
    unrolled_weights,
)
from keras_preact.layers.shortcuts import he_normal_fan_out
from keras_preact.layers.units import PLACEMENTS, PREACT_CHOICES, ResidualUnit, check_sync_bn

POOLINGS = (None, "avg", "max")
IMAGENET_WEIGHTS_DEPTHS = tuple(IMAGENET_WEIGHTS)

# The residual units' own options, as ResidualUnit's signature names them; the
# builder sets filters, strides and form itself and shares the BN and
# regulariser settings with its stem and head.
_SHARED = ("bn_momentum", "bn_epsilon", "sync_bn", "kernel_regularizer")
UNIT_OPTIONS = tuple(
    p for p in inspect.signature(ResidualUnit.__init__).parameters
    if p not in ("self", "filters", "strides", "form", "preact", "kwargs") + _SHARED
)


# -- loading saved models and weights ---------------------------------------------
def load_keras_file(path):
    """Load a ``.keras`` file with ``safe_mode=True`` (and no optimizer).

    Every way it can fail is a ``ValueError`` that says what is wrong with the
    file: missing, damaged, or refused because loading it would run code.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No such .keras file: {path!r}.")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is not a readable .keras file: it is damaged or truncated, or not "
            "a Keras model at all (a .keras file is a zip archive). Save the model again.")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as e:
        if compat.refuses_unsafe_code(e):
            raise ValueError(
                f"Refusing to load {path!r}: loading it would run code it carries (a Lambda "
                "layer or other Python code), and keras_preact loads models only with "
                "safe_mode=True. Rebuild the model without Lambda layers.") from None
        raise ValueError(f"{path!r} could not be loaded: {_first_line(e)}") from None
    except (TypeError, KeyError, OSError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"{path!r} could not be loaded ({type(e).__name__}: {_first_line(e)}). A model "
            "with custom layers needs their code imported first; a damaged file must be "
            "saved again.") from None


def _unit_shape(path, variable):
    """The shape of the unrolled weight ``path`` held in ``variable`` (a stacked weight
    holds one slice per unit)."""
    return tuple(variable.shape if path == variable.path else variable.shape[1:])


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def load_weights(model, path):
    """Load the weights of a ``.keras`` or ``.weights.h5`` file into ``model``.

    A ``.keras`` file is loaded as a model and its variables are matched by path
    (``stage1_unit1/conv1/kernel``), so a mismatch names the layers and shapes that
    differ. (Keras' ``model.load_weights`` matches by position: a ResNet-20 file
    loaded into a ResNet-32 is reported as a shape mismatch of
    ``stage1_unit4/conv1/kernel``, and a different ``classes`` as a warning about
    ``_operations_by_depth``.) A ``.weights.h5`` file has no names, so it goes to
    ``model.load_weights`` and a failure is reported in one line.
    """
    if path.endswith(".keras"):
        source = load_keras_file(path)
        # Matched as the unrolled network names them, so either form (scan_units or
        # not) loads into either.
        theirs = unrolled_weights(source)
        ours = {p: v for p, (v, _) in unrolled_variables(model).items()}
        differ = [f"{p}: {tuple(theirs[p].shape)} in the file, {_unit_shape(p, w)} in the model"
                  for p, w in ours.items()
                  if p in theirs and tuple(theirs[p].shape) != _unit_shape(p, w)]
        missing = [p for p in ours if p not in theirs]
        extra = [p for p in theirs if p not in ours]
        if differ or missing or extra:
            parts = ([f"shapes differ ({'; '.join(differ[:3])}"
                      + (f"; {len(differ) - 3} more" if len(differ) > 3 else "") + ")"]
                     if differ else [])
            parts += [f"{len(missing)} weights not in the file (e.g. {missing[0]})"] if missing else []
            parts += [f"{len(extra)} weights not in the model (e.g. {extra[0]})"] if extra else []
            raise ValueError(
                f"The weights in {path!r} (model {source.name!r}) do not fit {model.name!r}: "
                f"{', '.join(parts)}. Build the same architecture (arch, placement, shortcut, "
                "projection, classes) as the file.")
        assign_unrolled(model, theirs)
        return model
    import h5py

    if not h5py.is_hdf5(path):
        raise ValueError(f"{path!r} is not a .weights.h5 file (it has no HDF5 signature): it "
                         "is damaged or of another kind. Give a file written by "
                         "model.save_weights, or a .keras file.")
    try:
        with warnings.catch_warnings():  # Keras' aside on a mismatch; the error below says it
            warnings.filterwarnings("ignore", message="Skipping nested container")
            model.load_weights(path)
    except (ValueError, OSError, KeyError) as e:
        detail = compat.weights_mismatch(e) or _first_line(e)
        raise ValueError(
            f"The weights in {path!r} do not fit {model.name!r} ({detail}; .weights.h5 files "
            "are matched by position). Build the same architecture (arch, placement, "
            "shortcut, projection, classes) as the file.") from None
    return model


# -- argument checks ---------------------------------------------------------
def _check_weights(weights):
    if weights is None or weights == "imagenet":
        return weights
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"`weights` must be None, 'imagenet' or a file path, got {weights!r}.")
    path = os.fspath(weights)
    if not path.endswith((".h5", ".keras")):
        raise ValueError(
            f"`weights` must be None, 'imagenet' (keras.applications' ResNet V2 weights, "
            "depths 50/101/152), or the path to a '.weights.h5' or '.keras' file (or to "
            f"keras.applications' downloaded '.h5' file), got {weights!r}."
        )
    if not os.path.isfile(path):
        raise ValueError(f"`weights` file not found: {path!r}.")
    return path


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
    h, w, c = shape
    if h in (1, 3, 4) and c not in (1, 3, 4) and (w is None or w > 4):
        raise ValueError(
            f"`input_shape` {input_shape!r} looks channels-first; keras_preact's inputs are "
            f"channels-last (height, width, channels): use {(w, c, h)!r}."
        )
    for d in shape[:2]:
        if d is not None and d < min_size:
            raise ValueError(
                f"Input size {shape[:2]} is too small: this network downsamples by "
                f"{min_size}, so height and width must each be at least {min_size}."
            )
    return shape


def _check_unit_options(unit_options):
    unknown = sorted(set(unit_options) - set(UNIT_OPTIONS))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown}. The builders take the keras.applications "
            "arguments, placement, layout, stem_activation, head_activation, preact, "
            "bn_momentum, bn_epsilon, sync_bn, kernel_regularizer, scan_units, remat, "
            f"normalization and the residual units' options: {', '.join(UNIT_OPTIONS)}."
        )


# -- the network -----------------------------------------------------------------
@keras.saving.register_keras_serializable(package="keras_preact")
class PreActResNet(keras.Model):
    """A residual network of the paper, built from a stage table; it carries its
    configuration.

    A functional ``keras.Model`` (as keras-hub's backbones are): ``get_config()`` holds
    exactly the arguments below and ``from_config()`` rebuilds the same network, so
    whatever reads a network back (scan and unroll, export, the converters, the
    analysis) rebuilds it from its configuration. The named builders
    (``PreActResNet164`` ...) only bind a stage table and defaults.

    Args:
        stage_units: residual units per stage, e.g. ``(18, 18, 18)``.
        widths: residual-function width of each stage.
        strides: stride of each stage (on its first unit; see ``layout``).
        form: ``"basic"`` or ``"bottleneck"``.
        stem: ``"cifar"`` (3x3/1 conv) or ``"imagenet"`` (7x7/2 conv, max-pool).
        include_top, input_shape, pooling, classes, classifier_activation, name: as
            keras.applications' (``input_tensor`` too: the network then starts at that
            tensor's source inputs).
        placement: the residual unit of Fig. 4 (``keras_preact.layers.units.PLACEMENTS``).
        layout: ``"paper"``, ``"timm"`` or ``"keras_applications"``
            (``keras_preact.vocab.catalog.LAYOUTS``); the latter two need the ImageNet
            stem and a pre-activation placement.
        bn_momentum, bn_epsilon, sync_bn, kernel_regularizer: for every BN and
            convolution of the network (stem and head included); the BN defaults
            are the layout's (``catalog.LAYOUT_BN``).
        scan_units: hold each run of identical units (units 2..n of a stage) in one
            ``keras_preact.layers.scanned.ScannedUnits`` layer, applied by a scan: the same
            network, traced and compiled once per run instead of once per unit.
        remat: recompute the scanned units' activations in the backward pass
            (needs ``scan_units=True``): activation memory stops growing with depth.
        stem_activation, head_activation: what follows the stem's convolution and the last
            unit: ``"bn_relu"``, ``"relu"`` or ``None`` (nothing); ``"auto"`` (the default)
            is the network's usual form (``keras_preact.vocab.catalog.ACTIVATIONS``).
        preact: where every unit's shortcut branches (``"auto"``, ``"residual"``,
            ``"shared"``, ``"none"``; ``keras_preact.layers.units.ResidualUnit``); None (the
            default): after the stem as usual (the first unit shares its pre-activation
            with its shortcut unless the stem ends in BN-ReLU, the others ``"auto"``).
            Pre-activation placements only.
        normalization: ``(mean, std)`` per channel on the input's scale, applied by a
            first ``Rescaling`` layer named ``normalize`` (the converters' preprocessing);
            None: the network takes its inputs as they are.
        dtype: the dtype policy of every layer but ``normalize``, which stays float32
            (default: the global policy).
        **unit_options: the residual units' own options (``shortcut``,
            ``projection``, ``stride_on``, ``zero_init_residual``, ...; see
            ``keras_preact.layers.units.ResidualUnit``).

    Attributes:
        pyramid_outputs: ``{"P<level>": feature map}``, the last feature map of each
            stage by level (its stride is ``2**level``), keras-hub's
            ``FeaturePyramidBackbone`` convention, for a detection or segmentation
            head (where two stages share a level, the later one's).
    """

    def __init__(self, stage_units, widths, strides, form="bottleneck", stem="cifar", *,
                 include_top=True, input_shape=None, pooling=None, classes=10,
                 classifier_activation="softmax", placement="full_preact", layout="paper",
                 bn_momentum=None, bn_epsilon=None, sync_bn=False, kernel_regularizer=None,
                 scan_units=False, remat=False, normalization=None, input_tensor=None,
                 stem_activation="auto", head_activation="auto", preact=None,
                 name="resnet", dtype=None, trainable=True, **unit_options):
        form = check_choice("residual form", form, FORMS)
        stem = check_choice("stem", stem, STEMS)
        layout = check_choice("layout", layout, LAYOUTS)
        unit_cls = PLACEMENTS[check_choice("placement", placement, PLACEMENTS)]
        _check_unit_options(unit_options)
        fixed = _layout_options(layout, stem, unit_cls, unit_options)
        stem_act, head_act = _activations(stem_activation, head_activation, preact, layout, stem,
                                          unit_cls)
        _check_top(include_top, pooling, classes, classifier_activation)
        if remat and not scan_units:
            raise ValueError("remat=True recomputes the activations of scanned units; use it "
                             "with scan_units=True.")
        if "shortcut" in unit_options:
            unit_options["shortcut"] = resolve_shortcut(unit_options["shortcut"])
        policy = keras.dtype_policies.get(dtype) if dtype is not None else None
        momentum, epsilon = LAYOUT_BN[layout]
        shared = dict(bn_momentum=momentum if bn_momentum is None else bn_momentum,
                      bn_epsilon=epsilon if bn_epsilon is None else bn_epsilon,
                      sync_bn=check_sync_bn(sync_bn),
                      kernel_regularizer=keras.regularizers.get(kernel_regularizer),
                      dtype=policy)
        total_stride = (4 if stem == "imagenet" else 1) * math.prod(strides)
        inputs, x = _inputs(input_tensor, input_shape, total_stride, policy)
        if normalization is not None:
            x = normalization_layer(*normalization)(x)
        x, first_preact = _stem(x, stem, layout, widths[0], stem_act, **shared)
        x, stage_outputs = _stages(
            x, unit_cls, _unit_plan(layout, stage_units, strides, preact or first_preact,
                                    every=preact is not None), widths,
            form, scan=(bool(scan_units), bool(remat)), stride=total_stride // math.prod(strides),
            **shared, **fixed)
        # after the last addition (the pre-activation nets' extra BN-ReLU)
        x = _activation(x, head_act, "post", **shared)
        x = _head(x, include_top, pooling, classes, classifier_activation, **shared)
        super().__init__(inputs, x, name=name, trainable=trainable)

        self._arguments = dict(
            stage_units=list(stage_units), widths=list(widths), strides=list(strides),
            form=form, stem=stem, include_top=bool(include_top),
            input_shape=list(self.input_shape[1:]) if input_tensor is None
            else list(input_tensor.shape[1:]),
            pooling=pooling, classes=classes, classifier_activation=classifier_activation,
            placement=placement, layout=layout, bn_momentum=bn_momentum,
            bn_epsilon=bn_epsilon, sync_bn=shared["sync_bn"],
            kernel_regularizer=shared["kernel_regularizer"], scan_units=bool(scan_units),
            remat=bool(remat),
            normalization=None if normalization is None
            else [list(map(float, v)) for v in normalization],
            stem_activation=stem_activation, head_activation=head_activation, preact=preact,
            **unit_options)
        self._policy = policy or keras.config.dtype_policy()
        # The layers before an input tensor (none for a keras.Input, whose name and dtype
        # it keeps), serialised (as JSON reads them back): a sub-model attribute would be
        # tracked as a second owner of their weights.
        self._front, self._front_layers = None, False
        if input_tensor is not None:
            self._front_layers = not any(input_tensor is source for source in
                                         keras.utils.get_source_inputs(input_tensor))
            self._front = json.dumps(keras.saving.serialize_keras_object(
                keras.Model(self.inputs, input_tensor, name=f"{name}_input")))
        self.pyramid_outputs = {f"P{level}": out for level, out in stage_outputs.items()}

    # -- what the network is -------------------------------------------------------
    @property
    def depth(self):
        """The paper's depth: layers on the longest path (2 or 3 per unit, stem, top)."""
        units = sum(self._arguments["stage_units"])
        return units * (2 if self._arguments["form"] == "basic" else 3) + 2

    def options(self):
        """The network's arguments (a copy): what ``get_config`` holds, as objects."""
        return dict(self._arguments)

    def replace(self, **changes):
        """A new network of this configuration with ``changes`` (fresh weights). A network
        built on a ``keras.Input`` takes a new ``input_shape`` on an input of the same name
        and dtype; one with layers before its input tensor cannot change its shape here."""
        config = {**self.get_config(), **changes}
        if "input_shape" in changes and "input_model" in config:
            source = self.inputs[0]
            if len(self.inputs) != 1 or self._front_layers:
                raise ValueError(
                    f"{self.name!r} starts at an input tensor after other layers: build it "
                    "again on a tensor of the new shape to change input_shape.")
            del config["input_model"]
            config["input_tensor"] = keras.Input(
                shape=tuple(config.pop("input_shape")), name=source.name, dtype=source.dtype)
        return type(self).from_config(config)

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable,
                  "dtype": self._policy.name, **self._arguments}
        config["kernel_regularizer"] = keras.regularizers.serialize(
            config["kernel_regularizer"]) if config["kernel_regularizer"] else None
        activation = config["classifier_activation"]
        if activation is not None and not isinstance(activation, str):
            config["classifier_activation"] = keras.activations.serialize(activation)
        if self._front is not None:
            config["input_model"] = json.loads(self._front)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        front = config.pop("input_model", None)
        if front is not None:
            front = keras.saving.deserialize_keras_object(front, custom_objects=custom_objects)
            config["input_tensor"] = front.outputs[0]
            config.pop("input_shape", None)
        if config.get("kernel_regularizer") is not None:
            config["kernel_regularizer"] = keras.regularizers.deserialize(
                config["kernel_regularizer"], custom_objects=custom_objects)
        return cls(**config)


def scan(model, remat=False):
    """``model`` rebuilt from its configuration with ``scan_units=True`` (each run of
    identical units that keep their input's shape in one ``ScannedUnits`` layer), and
    the same weights."""
    return _rebuilt(model, scan_units=True, remat=bool(remat))


def unroll(model):
    """``model`` rebuilt with every unit its own layer, named as the builders name them,
    and the same weights: what a format that cannot hold a loop, or a tool that walks
    the units, needs. A network of 0.1 (a plain functional model: no configuration) whose
    layers form one chain is unrolled by calling its layers again, each scanned run
    replaced by its units."""
    if not isinstance(model, PreActResNet) and isinstance(model, keras.Model) and any(
            isinstance(layer, ScannedUnits) for layer in model.layers):
        return _unrolled_chain(model)
    return _rebuilt(model, scan_units=False, remat=False)


def _unrolled_chain(model):
    """The chain of ``model``'s layers called again on a new input (the same layer
    objects, so the same weights), each ``ScannedUnits`` replaced by fresh units of its
    template that take their slices of its stacked weights."""
    source = model.inputs[0] if len(model.inputs) == 1 else None
    inputs = x = keras.Input(batch_shape=source.shape, dtype=source.dtype, name="image") \
        if source is not None else None
    previous = source
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if previous is None or layer.input is not previous:
            raise ValueError(
                f"{model.name!r} is not a keras_preact.PreActResNet and its layers do not form "
                "one chain, so it cannot be unrolled: build the network with its builder and "
                "load the file with keras_preact.load_weights.")
        previous = layer.output
        if not isinstance(layer, ScannedUnits):
            x = layer(x)
            continue
        template = layer.template
        for index, name in enumerate(layer.unit_names):
            unit = type(template)(**template.options(), name=name, dtype=template.dtype_policy)
            x = unit(x)
            values = layer.unit_weights(index)
            for w in unit.weights:
                w.assign(values[w.path.split(f"{name}/", 1)[1]])
    return keras.Model(inputs, x, name=model.name)


def _rebuilt(model, **changes):
    if not isinstance(model, PreActResNet):
        raise ValueError(
            f"{getattr(model, 'name', model)!r} is not a keras_preact.PreActResNet: scan and "
            "unroll rebuild a network from its configuration. (A .keras file written before "
            "keras_preact 0.2.0 loads as a plain keras.Model: build the network with its "
            "builder and load the file with keras_preact.load_weights.)")
    new = model.replace(**changes)
    assign_unrolled(new, unrolled_weights(model))
    return new


def build_resnet(stage_units, widths, strides, form, stem, *, weights=None, **options):
    """A ``PreActResNet`` of this stage table (its arguments, see there) with ``weights``:
    None, or a ``.keras`` or ``.weights.h5`` file of this architecture
    (``weights="imagenet"`` is handled by the ImageNet builders)."""
    weights = _check_weights(weights)
    if weights == "imagenet" or is_keras_applications_file(weights):
        raise ValueError(
            "weights='imagenet' (keras.applications' ResNet V2 weights, or their .h5 file) "
            "exists only for PreActResNet50, PreActResNet101 and PreActResNet152.")
    model = PreActResNet(stage_units, widths, strides, form, stem, **options)
    if weights is not None:
        load_weights(model, weights)
    return model


def _layout_options(layout, stem, unit_cls, unit_options):
    """The unit options with what the layout fixes; a conflicting option is an error."""
    if layout == "paper":
        return unit_options
    if stem != "imagenet":
        raise ValueError(f"layout={layout!r} is an ImageNet layout; stem='cifar' networks "
                         "have only layout='paper'.")
    if not unit_cls.preact_ops:
        raise ValueError(f"layout={layout!r} is a pre-activation layout; placement "
                         f"{unit_cls.variant!r} has only layout='paper'.")
    fixed = {"stride_on": "3x3", "output_bias": layout == "keras_applications"}
    if layout == "keras_applications":
        fixed["projection"] = "B"
    wrong = [f"{k}={unit_options[k]!r}" for k, v in fixed.items()
             if k in unit_options and unit_options[k] != v]
    if wrong:
        raise ValueError(f"layout={layout!r} fixes {', '.join(fixed)} (see "
                         f"keras_preact.vocab.catalog.LAYOUTS); drop {', '.join(wrong)} or use "
                         "layout='paper'.")
    return {**unit_options, **fixed}


def _activations(stem_activation, head_activation, preact, layout, stem, unit_cls):
    """The stem's and the head's activation (``"bn_relu"``, ``"relu"`` or None), "auto"
    resolved; ``preact`` checked."""
    for what, value in (("stem_activation", stem_activation),
                        ("head_activation", head_activation)):
        if value is not None:
            check_choice(what, value, ACTIVATIONS)
    if preact is not None:
        check_choice("preact", preact, PREACT_CHOICES)
        if not unit_cls.preact_ops:
            raise ValueError(f"preact={preact!r} says where a pre-activation unit's shortcut "
                             f"branches; placement {unit_cls.variant!r} has no pre-activation "
                             "(use full_preact or relu_only_preact, or drop preact).")
    if layout != "paper":
        wrong = [f"{k}={v!r}" for k, v, allowed in (
            ("stem_activation", stem_activation, ("auto", None)),
            ("head_activation", head_activation, ("auto", "bn_relu")),
            ("preact", preact, (None,))) if v not in allowed]
        if wrong:
            raise ValueError(f"layout={layout!r} fixes the stem (no activation), the head "
                             "(BN-ReLU) and where each unit's shortcut branches; drop "
                             f"{', '.join(wrong)} or use layout='paper'.")
        return None, "bn_relu"
    preactivated = bool(unit_cls.preact_ops)
    if stem_activation == "auto":
        stem_activation = None if stem == "cifar" and preactivated else "bn_relu"
    if head_activation == "auto":
        head_activation = "bn_relu" if preactivated else None
    return stem_activation, head_activation


def _check_top(include_top, pooling, classes, classifier_activation):
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}. Valid choices: None, 'avg', 'max'.")
    if include_top:
        check_int("classes", classes, minimum=1)
        if pooling is not None:
            raise ValueError(
                f"pooling={pooling!r} conflicts with include_top=True (the top "
                "already pools by global average). Use pooling=None with the "
                "top, or include_top=False with pooling='avg' or 'max'."
            )
    try:
        keras.activations.get(classifier_activation)
    except ValueError:
        raise ValueError(
            f"Unknown classifier_activation {classifier_activation!r}: use None (logits), "
            "'softmax' (the default) or another keras.activations name."
        ) from None


def _inputs(input_tensor, input_shape, total_stride, policy):
    """(the network's inputs, the tensor its stem reads)."""
    if input_tensor is None:
        dtype = None if policy is None else policy.variable_dtype
        inputs = keras.Input(shape=_check_input_shape(input_shape, total_stride),
                             name="image", dtype=dtype)
        return inputs, inputs
    if not keras.backend.is_keras_tensor(input_tensor):
        raise ValueError(
            "`input_tensor` must be a symbolic Keras tensor (from keras.Input "
            f"or another layer), got {type(input_tensor).__name__}."
        )
    _check_input_shape(input_tensor.shape[1:], total_stride)
    sources = keras.utils.get_source_inputs(input_tensor)
    return (sources[0] if len(sources) == 1 else sources), input_tensor


def _bn_kw(bn_momentum, bn_epsilon, sync_bn, dtype=None, **_):
    return dict(momentum=bn_momentum, epsilon=bn_epsilon, synchronized=sync_bn, dtype=dtype)


def _conv_kw(kernel_regularizer, use_bias=False, dtype=None, **_):
    return dict(use_bias=use_bias, kernel_initializer=he_normal_fan_out(),
                kernel_regularizer=kernel_regularizer, dtype=dtype)


def _activation(x, activation, prefix, **shared):
    """``activation`` ("bn_relu", "relu" or None) as layers ``{prefix}_bn``, ``{prefix}_relu``."""
    if activation == "bn_relu":
        x = layers.BatchNormalization(name=f"{prefix}_bn", **_bn_kw(**shared))(x)
    if activation is not None:
        x = layers.ReLU(name=f"{prefix}_relu", dtype=shared.get("dtype"))(x)
    return x


def _stem(x, stem, layout, width, activation, **shared):
    """The stem, and how the first unit is pre-activated after it: its BN-ReLU shared with
    its shortcut, or none where the stem ends in BN-ReLU."""
    dtype = shared.get("dtype")
    first_preact = "none" if activation == "bn_relu" else "shared"
    if stem == "cifar":
        x = layers.Conv2D(width, 3, padding="same", name="stem_conv", **_conv_kw(**shared))(x)
        return _activation(x, activation, "stem", **shared), first_preact
    x = layers.ZeroPadding2D(3, name="stem_pad", dtype=dtype)(x)
    x = layers.Conv2D(width, 7, strides=2, name="stem_conv",
                      **_conv_kw(**{**shared, "use_bias": layout == "keras_applications"}))(x)
    if layout == "paper":
        x = _activation(x, activation, "stem", **shared)
        if activation is None:  # a pool over signed values pads with -inf
            return PaddedMaxPooling2D(3, 2, 1, name="stem_pool", dtype=dtype)(x), first_preact
        x = layers.ZeroPadding2D(1, name="pool_pad", dtype=dtype)(x)  # exact: the input is >= 0
        return layers.MaxPooling2D(3, strides=2, name="stem_pool", dtype=dtype)(x), first_preact
    if layout == "timm":
        return PaddedMaxPooling2D(3, 2, 1, name="stem_pool", dtype=dtype)(x), "auto"
    x = layers.ZeroPadding2D(1, name="pool_pad", dtype=dtype)(x)  # keras.applications' zeros
    return layers.MaxPooling2D(3, strides=2, name="stem_pool", dtype=dtype)(x), "auto"


def _unit_plan(layout, stage_units, strides, first_preact, every=False):
    """Per stage, the per-unit options: its stride and, where the layout needs them,
    its projection and pre-activation (``first_preact`` on the first unit, or on ``every``
    unit)."""
    plan = []
    for s, (units, stride) in enumerate(zip(stage_units, strides)):
        stage = [{"strides": 1} for _ in range(units)]
        if layout == "keras_applications":
            # The next stage's stride, on this stage's last unit, whose shortcut subsamples
            # the raw input (keras.applications' MaxPooling2D(1, strides=2)).
            after = strides[s + 1] if s + 1 < len(strides) else 1
            if after != 1:
                stage[-1].update(strides=after, projection="A", preact="residual")
        else:
            stage[0]["strides"] = stride
        plan.append(stage)
    for unit in [u for stage in plan for u in stage] if every else [plan[0][0]]:
        if first_preact != "auto":
            unit["preact"] = first_preact
    return plan


def _stages(x, unit_cls, plan, widths, form, scan=(False, False), stride=1, **unit_kw):
    """The residual stages, one unit per entry of ``plan``, and ``{level: the last
    feature map at that level}`` (level: log2 of its stride, the stem's ``stride``
    included); with ``scan=(True, remat)``
    each run of identical units that keep their input's shape is one ``ScannedUnits``."""
    scan_units, remat = scan
    levels = {}
    for s, (stage, width) in enumerate(zip(plan, widths), start=1):
        units = [{**unit_kw, **{k: v for k, v in options.items()
                                if k != "preact" or unit_cls.preact_ops}}
                 for options in stage]
        out = width * EXPANSION[form]
        keys = [json.dumps(options, sort_keys=True, default=repr)
                if scan_units and options["strides"] == 1
                and (x.shape[-1] if u == 0 else out) == out else None
                for u, options in enumerate(units)]
        for start, count in runs(keys):
            name = f"stage{s}_unit{start + 1}"
            unit = unit_cls(width, form=form, name=name, **units[start])
            if count > 1:
                unit = ScannedUnits(unit, count, remat=remat, name=scanned_name(name, count),
                                    dtype=unit_kw.get("dtype"))
            x = unit(x)
        stride *= math.prod(options["strides"] for options in stage)
        levels[stride.bit_length() - 1] = x
    return x, levels


def _head(x, include_top, pooling, classes, classifier_activation, kernel_regularizer,
          dtype=None, **_):
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool", dtype=dtype)(x)
        return layers.Dense(classes, activation=classifier_activation, name="predictions",
                            kernel_regularizer=kernel_regularizer, dtype=dtype)(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool", dtype=dtype)(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool", dtype=dtype)(x)
    return x


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


def preact_resnet_imagenet(depth, *, stem="imagenet", layout=None, weights=None,
                           include_top=True, input_shape=None, classes=None, name=None,
                           stride_on=None, placement="full_preact", **kwargs):
    """An ImageNet-family network (18, 34, 50, 101, 152, 200); ``stem="cifar"``
    gives the 32x32 variant (3x3/1 stem, no max-pool, 10 classes by default).

    ``layout`` is ``"paper"`` (the default), ``"timm"`` or ``"keras_applications"``
    (``keras_preact.vocab.catalog.LAYOUTS``). ``weights="imagenet"`` (depths 50, 101, 152)
    loads keras.applications' published ResNet V2 weights, converted, into the
    ``"keras_applications"`` layout (the default layout then); so does the path to
    their downloaded ``.h5`` file. Their inputs are pixels scaled to [-1, 1]
    (``catalog.KERAS_APPLICATIONS_NORMALIZATION``).
    """
    form, units = imagenet_stages(depth)
    stem = check_choice("stem", stem, STEMS)
    weights = _check_weights(weights)
    pretrained = weights == "imagenet" or is_keras_applications_file(weights)
    cached = False
    if layout is None:
        layout = "keras_applications" if pretrained else "paper"
    layout = check_choice("layout", layout, LAYOUTS)
    if pretrained:
        _check_pretrained(depth, stem, layout, placement, include_top, classes, kwargs)
        source = pretrained_source("imagenet")
        if weights == "imagenet":  # fetched before the build: offline fails at once
            weights = source.fetch(depth, include_top)
            cached = True
    defaults = FAMILY_DEFAULTS["imagenet" if stem == "imagenet" else "imagenet_cifar_stem"]
    suffix = ("" if stem == "imagenet" else "_cifar") + ("" if layout == "paper" else f"_{layout}")
    model = build_resnet(
        units, IMAGENET_WIDTHS, IMAGENET_STRIDES, form, stem,
        weights=None if pretrained else weights, include_top=include_top, layout=layout,
        input_shape=input_shape or defaults["input_shape"],
        classes=defaults["classes"] if classes is None else classes,
        stride_on=stride_on or defaults["stride_on"],
        name=name or _default_name(depth, check_choice("placement", placement, PLACEMENTS), suffix),
        placement=placement, **kwargs,
    )
    if pretrained:
        source.load(model, depth, include_top, weights, keep=cached)
    return model


def _check_pretrained(depth, stem, layout, placement, include_top, classes, options):
    from keras_preact.vocab.catalog import imagenet_weights_file, resolve_shortcut

    imagenet_weights_file(depth)  # a depth they exist for
    problems = []
    if layout != "keras_applications":
        problems.append(f"layout={layout!r} (they are for layout='keras_applications')")
    if stem != "imagenet":
        problems.append("stem='cifar'")
    if placement != "full_preact":
        problems.append(f"placement={placement!r}")
    if resolve_shortcut(options.get("shortcut", "identity"))["name"] != "identity":
        problems.append(f"shortcut={options['shortcut']!r}")
    if include_top and classes not in (None, 1000):
        problems.append(f"classes={classes} with the top (use include_top=False for a new head)")
    if problems:
        raise ValueError("keras.applications' ImageNet weights fit the full pre-activation "
                         f"ResNet-{depth} with identity shortcuts and 1000 classes, not "
                         + "; ".join(problems) + ".")


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
        "input_shape, pooling, classes, classifier_activation, name), placement\n"
        "(default 'full_preact'), shortcut (default 'identity') and the other options of\n"
        "keras_preact.build_resnet and keras_preact.layers.units.ResidualUnit"
        + (" (and stem, layout; see keras_preact.models.preact_resnet_imagenet)"
           if family != "cifar" else "") + ".\n"
        + ("weights='imagenet' loads keras.applications' ResNet%dV2 weights.\n" % depth
           if depth in IMAGENET_WEIGHTS_DEPTHS and family != "cifar" else "")
    )
    return builder


# The named builders, one per depth of the catalog's tables.
_NAMED = {f"PreActResNet{depth}": _named_builder("cifar", depth, form)
          for depth, form in CIFAR_DEPTHS.items()}
_NAMED.update({f"PreActResNet{depth}": _named_builder("imagenet", depth)
               for depth in IMAGENET_STAGES})
globals().update(_NAMED)
