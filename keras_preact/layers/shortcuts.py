"""Shortcut connections of He et al. 2016, Fig. 2 and Table 1, as Keras layers.

A residual unit computes ``y = h(x) + F(x)``. A shortcut layer owns ``h`` *and*
the merge with the residual branch, because some variants (exclusive gating,
constant scaling with a scaled residual) also act on ``F(x)``::

    shortcut(x, residual) -> y

Two independent choices make a shortcut:

* the variant (``SHORTCUTS``): ``identity``, ``constant_scaling``,
  ``exclusive_gating``, ``shortcut_only_gating``, ``conv1x1``, ``dropout``;
* how a change of shape (stride or width) is matched, with the classic names
  (``PROJECTIONS``): ``"A"`` subsamples and zero-pads the channels of the
  identity, ``"B"`` projects with a 1x1 convolution only where the shape changes
  (the paper's default), ``"C"`` projects on every unit. The ``conv1x1``
  variant projects on every unit whatever this choice is.

The variant is applied on top of the shape-matched input: for a unit that
changes shape, ``constant_scaling`` computes ``scale * P(x)`` where ``P`` is
the projection. Gates are ``g(x) = sigmoid(conv1x1(x) + b_g)`` computed from
the shortcut's input, with the unit's stride and output width.
"""

import keras
from keras import layers, ops

from keras_preact.vocab._validation import check_choice, check_float, check_int
from keras_preact.vocab.catalog import (  # noqa: F401 - the spec helpers are public here too
    PROJECTIONS,
    SHORTCUT_FIGURES,
    SHORTCUT_OPTIONS,
    format_shortcut,
    parse_shortcut,
    resolve_shortcut,
)


def strided_shape(input_shape, strides, channels):
    """Output shape of a "same"-padded stage with ``strides`` and ``channels``."""
    h, w = input_shape[1:3]
    h = None if h is None else -(-h // strides)
    w = None if w is None else -(-w // strides)
    return (input_shape[0], h, w, channels)


def match_mode(projection, strides, in_channels, filters, always_project=False):
    """How a shortcut meets the output's shape: "identity", "pad" or "project"."""
    if always_project or projection == "C":
        return "project"
    if strides == 1 and in_channels == filters:
        return "identity"
    return "project" if projection == "B" else "pad"


def he_normal_fan_out():
    """He-normal initialisation over the fan-out, as in the authors' Torch code.

    ``std = sqrt(2 / (k * k * out_channels))``, untruncated.
    """
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


class Shortcut(layers.Layer):
    """Base class: the shortcut ``h`` of a residual unit and the merge with ``F``.

    Args:
        filters: channels of the unit's output (and so of the shortcut).
        strides: spatial stride of the unit.
        projection: ``"A"``, ``"B"`` or ``"C"`` (see module docstring).
        projection_bias: give the projection a bias (keras.applications'
            ResNet V2 layout; the paper's projections have none).
        kernel_initializer, kernel_regularizer: for any 1x1 convolution.

    Subclasses set ``variant`` (their name in ``keras_preact.vocab.catalog``, which holds
    their figure and options) and implement ``call(x, residual, training=None)``.
    """

    variant = None
    figure = None
    defaults = {}  # the variant's own options and their defaults (catalog.SHORTCUT_OPTIONS)
    always_project = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.variant is not None:
            cls.figure = SHORTCUT_FIGURES[cls.variant]
            cls.defaults = SHORTCUT_OPTIONS[cls.variant]

    def __init__(
        self,
        filters,
        strides=1,
        projection="B",
        projection_bias=False,
        kernel_initializer=None,
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.projection_bias = bool(projection_bias)
        self.filters = check_int("filters", filters, minimum=1)
        self.strides = check_int("strides", strides, minimum=1)
        self.projection = check_choice("projection", projection, PROJECTIONS)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or he_normal_fan_out()
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    # -- shape matching -------------------------------------------------------
    def _conv1x1(self, name, use_bias=False, bias_initializer="zeros"):
        return layers.Conv2D(
            self.filters,
            1,
            strides=self.strides,
            use_bias=use_bias,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_initializer=bias_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(
                f"{self.__class__.__name__} needs a known number of input "
                f"channels, got input shape {input_shape}."
            )
        self.mode = match_mode(
            self.projection, self.strides, in_channels, self.filters, self.always_project
        )
        if self.mode == "pad" and in_channels > self.filters:
            raise ValueError(
                f"Projection 'A' zero-pads channels and cannot reduce "
                f"{in_channels} channels to {self.filters}; use 'B' or 'C'."
            )
        self.proj = None
        if self.mode == "project":
            self.proj = self._conv1x1("projection", use_bias=self.projection_bias)
            self.proj.build(input_shape)
        self.build_variant(input_shape)
        self.built = True

    def build_variant(self, input_shape):
        """Hook for the variant's own sublayers (gate, dropout)."""

    def match(self, x):
        """``x`` brought to the output's shape: identity, zero-pad (A) or projection."""
        if self.mode == "identity":
            return x
        if self.mode == "project":
            return self.proj(x)
        s = self.strides
        if s != 1:
            x = x[:, ::s, ::s, :]
        extra = self.filters - x.shape[-1]
        if extra:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])
        return x

    def compute_output_shape(self, input_shape, residual_shape=None):
        return strided_shape(input_shape, self.strides, self.filters)

    def call(self, x, residual, training=None):
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            strides=self.strides,
            projection=self.projection,
            projection_bias=self.projection_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer)
            if self.kernel_regularizer
            else None,
        )
        config.update({k: getattr(self, k) for k in self.defaults})
        return config


def _register(cls):
    return keras.saving.register_keras_serializable(package="keras_preact")(cls)


@_register
class IdentityShortcut(Shortcut):
    """Fig. 2(a): ``y = x + F(x)``."""

    variant = "identity"

    def call(self, x, residual, training=None):
        return self.match(x) + residual


@_register
class ConstantScalingShortcut(Shortcut):
    """Fig. 2(b): ``y = scale * x + F(x)``, or ``+ (1 - scale) * F(x)``.

    Args:
        scale: the constant lambda (paper: 0.5).
        scale_residual: also multiply the residual branch by ``1 - scale``.
    """

    variant = "constant_scaling"

    def __init__(self, filters, scale=0.5, scale_residual=False, **kwargs):
        super().__init__(filters, **kwargs)
        self.scale = check_float("scale", scale)
        self.scale_residual = bool(scale_residual)

    def call(self, x, residual, training=None):
        if self.scale_residual:
            residual = (1.0 - self.scale) * residual
        return self.scale * self.match(x) + residual


class _Gated(Shortcut):
    """Shared gate ``g(x) = sigmoid(conv1x1(x) + b_g)`` of the two gating variants."""

    def __init__(self, filters, gate_bias=-6.0, **kwargs):
        super().__init__(filters, **kwargs)
        self.gate_bias = check_float("gate_bias", gate_bias)

    def build_variant(self, input_shape):
        self.gate_conv = self._conv1x1(
            "gate",
            use_bias=True,
            bias_initializer=keras.initializers.Constant(self.gate_bias),
        )
        self.gate_conv.build(input_shape)

    def gate(self, x):
        return ops.sigmoid(self.gate_conv(x))


@_register
class ExclusiveGatingShortcut(_Gated):
    """Fig. 2(c): ``y = (1 - g(x)) * x + g(x) * F(x)``."""

    variant = "exclusive_gating"

    def call(self, x, residual, training=None):
        g = self.gate(x)
        return (1.0 - g) * self.match(x) + g * residual


@_register
class ShortcutOnlyGatingShortcut(_Gated):
    """Fig. 2(d): ``y = (1 - g(x)) * x + F(x)``."""

    variant = "shortcut_only_gating"

    def call(self, x, residual, training=None):
        g = self.gate(x)
        return (1.0 - g) * self.match(x) + residual


@_register
class Conv1x1Shortcut(Shortcut):
    """Fig. 2(e): ``y = conv1x1(x) + F(x)`` on every unit."""

    variant = "conv1x1"
    always_project = True

    def call(self, x, residual, training=None):
        return self.match(x) + residual


@_register
class DropoutShortcut(Shortcut):
    """Fig. 2(f): ``y = dropout(x) + F(x)``; dropout is active only in training."""

    variant = "dropout"

    def __init__(self, filters, rate=0.5, **kwargs):
        super().__init__(filters, **kwargs)
        self.rate = check_float("rate", rate, 0.0, 1.0, high_open=True)

    def build_variant(self, input_shape):
        self.dropout = layers.Dropout(self.rate, dtype=self.dtype_policy, name="dropout")
        self.dropout.build(input_shape)

    def call(self, x, residual, training=None):
        return self.dropout(self.match(x), training=training) + residual


SHORTCUTS = {
    cls.variant: cls
    for cls in (
        IdentityShortcut,
        ConstantScalingShortcut,
        ExclusiveGatingShortcut,
        ShortcutOnlyGatingShortcut,
        Conv1x1Shortcut,
        DropoutShortcut,
    )
}


def make_shortcut(spec, filters, **kwargs):
    """Instantiate the shortcut layer of ``spec`` (see ``resolve_shortcut``)."""
    spec = resolve_shortcut(spec)
    options = {k: v for k, v in spec.items() if k != "name"}
    return SHORTCUTS[spec["name"]](filters, **options, **kwargs)
