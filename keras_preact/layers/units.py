"""Residual units of He et al. 2016, Fig. 4 and Table 2, as Keras layers.

A unit computes ``y = h(x) + F(x)`` and ``x_next = f(y)``. The five activation
placements of Fig. 4 differ only in where BN and ReLU sit around the
convolutions of ``F`` and after the addition (``f``). ``ResidualUnit`` owns
construction, ``build``, ``call`` (the paper's equation, ``f(h(x) + F(x))``),
``compute_output_shape`` and ``get_config``; each placement is a thin subclass
that declares where its BN and ReLU operations sit:

========================  ===================  ==========================  ============
placement (Fig. 4)        pre-activation       each conv of F              after ``+``
========================  ===================  ==========================  ============
(a) original              --                   conv-BN-ReLU, last conv-BN  ReLU
(b) bn_after_addition     --                   conv-BN-ReLU, last conv     BN-ReLU
(c) relu_before_addition  --                   conv-BN-ReLU (all)          --
(d) relu_only_preact      ReLU                 conv-BN-ReLU, last conv-BN  --
(e) full_preact           BN-ReLU              conv-BN-ReLU, last conv     --
========================  ===================  ==========================  ============

(For the pre-activation forms the table is read with the pre-activation
first: (e) is BN-ReLU-conv-BN-ReLU-conv, (d) is ReLU-conv-BN-ReLU-conv-BN.)

The residual function is ``basic`` (two 3x3 convolutions, ``filters`` wide) or
``bottleneck`` (1x1 to ``filters``, 3x3, 1x1 to ``4 * filters``).

Pre-activation units (d, e) can place their pre-activation in three ways
(``preact``): ``"residual"`` on the residual branch only (the shortcut sees
``x``), ``"shared"`` once before the split so that the shortcut sees the
activated input, or ``"none"`` (the input is already activated, as after the
ImageNet stem). ``"auto"`` shares it where the unit changes shape (whether the
shortcut projects or, with projection ``"A"``, subsamples and zero-pads), as the
authors' code does (fb.resnet.torch ``preresnet.lua``: ``both_preact`` on the
first unit of every stage; resnet-1k-layers: "common BN, ReLU" where the
dimensions increase), and otherwise keeps the identity path clean.

A strided convolution wider than 1x1 is padded symmetrically, ``(k - 1) // 2``
zeros on every side, then convolved without padding, as Torch's
``SpatialConvolution(..., stride, stride, 1, 1)`` does. (Keras' ``"same"`` pads
only the bottom and right of an even input, which moves the 3x3 window one pixel
off the stride-2 shortcut's grid.)
"""

import keras
from keras import layers

from keras_preact.vocab._validation import check_choice, check_float, check_int
from keras_preact.vocab.catalog import (
    BN_EPSILON,
    BN_MOMENTUM,
    EXPANSION,
    FORMS,
    PLACEMENT_FIGURES,
    PROJECTIONS,
)
from keras_preact.layers.shortcuts import (
    he_normal_fan_out,
    make_shortcut,
    resolve_shortcut,
    strided_shape,
)

STRIDE_ON = ("first", "3x3")
PREACT_CHOICES = ("auto", "residual", "shared", "none")

# Operation tokens used by the placement tables below.
BN, RELU = "bn", "relu"


def check_sync_bn(sync_bn):
    """Synchronised BatchNormalization exists only on the TensorFlow backend."""
    if sync_bn and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "sync_bn=True (synchronised BatchNormalization) is available only "
            f"on the TensorFlow backend, not {keras.backend.backend()!r}. "
            "On JAX, keras.distribution.DataParallel already computes "
            "global-batch statistics; use sync_bn=False."
        )
    return bool(sync_bn)


class ResidualUnit(layers.Layer):
    """Base class of the residual units; use a placement subclass.

    Args:
        filters: width of the residual function. The unit outputs ``filters``
            channels (basic) or ``4 * filters`` channels (bottleneck).
        form: ``"basic"`` or ``"bottleneck"``.
        strides: spatial stride of the unit (1 or 2 in the paper's nets).
        stride_on: which convolution carries the stride: ``"first"`` (the
            authors' CIFAR code, resnet-1k-layers) or ``"3x3"`` (the
            fb.resnet.torch ImageNet pre-ResNet).
        shortcut: a shortcut name or dict, see ``keras_preact.layers.shortcuts``.
        projection: ``"A"``, ``"B"`` or ``"C"``: how a change of shape is met.
        preact: ``"auto"``, ``"residual"``, ``"shared"`` or ``"none"``; only
            meaningful for pre-activation placements.
        bn_momentum, bn_epsilon: BatchNormalization settings; the defaults
            (0.9, 1e-5) are the Torch values of the authors' code.
        sync_bn: synchronise BN statistics across replicas (TensorFlow only).
        zero_init_residual: initialise the last BN gamma (or, where F ends in
            a convolution, its kernel) to zero so the unit starts as ``h``.
        output_bias: give the last convolution of F and the shortcut's
            projection a bias (keras.applications' ResNet V2 layout; the
            paper's units have none: every convolution feeds a BN or an
            addition).
        kernel_initializer: defaults to He-normal over the fan-out.
        kernel_regularizer: applied to every convolution kernel.
    """

    variant = None  # the subclass's name in keras_preact.vocab.catalog (its Fig. 4 panel)
    figure = None
    preact_ops = ()
    after_conv = (BN, RELU)
    last_conv_tail = (BN,)
    after_addition = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.variant is not None:
            cls.figure = PLACEMENT_FIGURES[cls.variant]

    def __init__(
        self,
        filters,
        form="basic",
        strides=1,
        stride_on="first",
        shortcut="identity",
        projection="B",
        preact="auto",
        bn_momentum=BN_MOMENTUM,
        bn_epsilon=BN_EPSILON,
        sync_bn=False,
        zero_init_residual=False,
        output_bias=False,
        kernel_initializer=None,
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if self.variant is None:
            raise TypeError(
                "ResidualUnit is a base class; use one of "
                f"{', '.join(PLACEMENT_FIGURES)} (keras_preact.layers.units.PLACEMENTS)."
            )
        self.filters = check_int("filters", filters, minimum=1)
        self.form = check_choice("residual form", form, FORMS)
        self.strides = check_int("strides", strides, minimum=1)
        self.stride_on = check_choice("stride_on", stride_on, STRIDE_ON)
        self.shortcut_spec = resolve_shortcut(shortcut)
        self.projection = check_choice("projection", projection, PROJECTIONS)
        self.preact = check_choice("preact", preact, PREACT_CHOICES)
        if not self.preact_ops and self.preact not in ("auto", "residual"):
            raise ValueError(
                f"preact={preact!r} applies only to pre-activation placements "
                f"(relu_only_preact, full_preact), not {self.variant!r}."
            )
        self.bn_momentum = check_float("bn_momentum", bn_momentum, 0.0, 1.0)
        self.bn_epsilon = check_float("bn_epsilon", bn_epsilon, 0.0, low_open=True)
        self.sync_bn = check_sync_bn(sync_bn)
        self.zero_init_residual = bool(zero_init_residual)
        self.output_bias = bool(output_bias)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or he_normal_fan_out()
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    # -- structure --------------------------------------------------------------
    @property
    def out_channels(self):
        return self.filters * EXPANSION[self.form]

    def _conv_specs(self):
        """(kernel, filters, strides) of each convolution of F."""
        if self.form == "basic":
            kernels, widths = (3, 3), (self.filters, self.filters)
        else:
            kernels, widths = (1, 3, 1), (self.filters, self.filters, self.out_channels)
        stride_at = 0 if self.stride_on == "first" else kernels.index(3)
        return [
            (k, w, self.strides if i == stride_at else 1)
            for i, (k, w) in enumerate(zip(kernels, widths))
        ]

    def _resolve_preact(self, in_channels):
        if not self.preact_ops:
            return "none"
        if self.preact != "auto":
            return self.preact
        changes = self.strides != 1 or in_channels != self.out_channels
        return "shared" if changes else "residual"

    def _conv(self, spec, index, last):
        """The convolution ``index`` of F, preceded by its symmetric padding if strided."""
        kernel, filters, strides = spec
        pad = []
        if strides > 1 and kernel > 1:
            pad = [layers.ZeroPadding2D((kernel - 1) // 2, dtype=self.dtype_policy,
                                        name=f"pad{index}")]
        return pad + [layers.Conv2D(
            filters, kernel, strides=strides, padding="valid" if pad else "same",
            use_bias=self.output_bias and last,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy, name=f"conv{index}",
        )]

    def _make(self, token, name):
        if token == BN:
            return layers.BatchNormalization(
                momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                synchronized=self.sync_bn, dtype=self.dtype_policy, name=name,
            )
        return layers.ReLU(dtype=self.dtype_policy, name=name)

    @staticmethod
    def _build_chain(chain, shape):
        for layer in chain:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        return shape

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(f"{self.name} needs a known channel count, got {input_shape}.")
        self.preact_at = self._resolve_preact(in_channels)

        # Pre-activation, applied before the split ("shared") or inside F.
        self.pre = [
            self._make(t, f"preact_{t}")
            for t in (self.preact_ops if self.preact_at != "none" else ())
        ]
        # The residual function F.
        self.branch = []
        specs = self._conv_specs()
        for i, spec in enumerate(specs, start=1):
            self.branch += self._conv(spec, i, last=i == len(specs))
            tail = self.last_conv_tail if i == len(specs) else self.after_conv
            self.branch += [self._make(t, f"{t}{i}") for t in tail]
        # The shortcut h, which also performs the merge.
        self.shortcut = make_shortcut(
            self.shortcut_spec, self.out_channels, strides=self.strides,
            projection=self.projection, projection_bias=self.output_bias,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy,
            name="shortcut",
        )
        # f, after the addition.
        self.post = [self._make(t, f"post_{t}") for t in self.after_addition]

        shape = self._build_chain(self.pre, input_shape)
        shortcut_in = shape if self.preact_at == "shared" else input_shape
        out = self._build_chain(self.branch, shape)
        self.shortcut.build(shortcut_in)
        self._build_chain(self.post, out)
        if self.zero_init_residual:
            last = self.branch[-1]
            var = last.gamma if isinstance(last, layers.BatchNormalization) else last.kernel
            var.assign(keras.ops.zeros(var.shape, dtype=var.dtype))
        self.built = True

    # -- the pieces of the paper's equation -------------------------------------
    @staticmethod
    def _run(chain, x, training, relu_inputs=None):
        for layer in chain:
            if isinstance(layer, layers.BatchNormalization):
                x = layer(x, training=training)
            else:
                if relu_inputs is not None and isinstance(layer, layers.ReLU):
                    relu_inputs.append(x)
                x = layer(x)
        return x

    def split(self, x, training=None, relu_inputs=None):
        """``(shortcut input, residual input)`` after any shared pre-activation."""
        if self.preact_at == "shared":
            x = self._run(self.pre, x, training, relu_inputs)
            return x, x
        if self.preact_at == "residual":
            return x, self._run(self.pre, x, training, relu_inputs)
        return x, x

    def F(self, r, training=None, relu_inputs=None):
        """The residual function on an already split (and maybe pre-activated) input."""
        return self._run(self.branch, r, training, relu_inputs)

    def h(self, x, residual, training=None):
        return self.shortcut(x, residual, training=training)

    def f(self, y, training=None, relu_inputs=None):
        return self._run(self.post, y, training, relu_inputs)

    def call(self, x, training=None):
        """``x_{l+1} = f(h(x_l) + F(x_l))``; each placement differs only in its tables."""
        x, r = self.split(x, training)
        return self.f(self.h(x, self.F(r, training), training), training)

    def parts(self, x, training=None):
        """``call`` step by step, for analysis: a dict of ``F`` (``F(x_l)``), ``sum``
        (what ``f`` receives: ``h(x_l) + F(x_l)``), ``output`` (``x_{l+1}``), and the
        input of each ReLU of the unit: ``relu_inputs`` (all, in order) and
        ``after_addition_relu_input`` (that of ``f``'s ReLU, or ``None``)."""
        relus = []
        x, r = self.split(x, training, relus)
        residual = self.F(r, training, relus)
        total = self.h(x, residual, training)
        before_f = len(relus)
        output = self.f(total, training, relus)
        return {"F": residual, "sum": total, "output": output, "relu_inputs": relus,
                "after_addition_relu_input": relus[before_f] if len(relus) > before_f else None}

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape, self.strides, self.out_channels)

    def options(self):
        """The constructor's arguments of this unit (objects, not their serialised form)."""
        return dict(
            filters=self.filters,
            form=self.form,
            strides=self.strides,
            stride_on=self.stride_on,
            shortcut=dict(self.shortcut_spec),
            projection=self.projection,
            preact=self.preact,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            sync_bn=self.sync_bn,
            zero_init_residual=self.zero_init_residual,
            output_bias=self.output_bias,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
        )

    def clone(self):
        """A new, unbuilt unit of the same configuration and name."""
        return type(self)(**self.options(), name=self.name, dtype=self.dtype_policy)

    def get_config(self):
        config = {**super().get_config(), **self.options()}
        config["kernel_initializer"] = keras.initializers.serialize(self.kernel_initializer)
        config["kernel_regularizer"] = (keras.regularizers.serialize(self.kernel_regularizer)
                                        if self.kernel_regularizer else None)
        return config


def _register(cls):
    return keras.saving.register_keras_serializable(package="keras_preact")(cls)


@_register
class OriginalUnit(ResidualUnit):
    """Fig. 4(a), the original unit: ``x_next = ReLU(h(x) + F(x))``,
    F = conv-BN-ReLU-conv-BN."""

    variant = "original"
    after_addition = (RELU,)


@_register
class BNAfterAdditionUnit(ResidualUnit):
    """Fig. 4(b): ``x_next = ReLU(BN(h(x) + F(x)))``, F = conv-BN-ReLU-conv."""

    variant = "bn_after_addition"
    last_conv_tail = ()
    after_addition = (BN, RELU)


@_register
class ReLUBeforeAdditionUnit(ResidualUnit):
    """Fig. 4(c): ``x_next = h(x) + F(x)``, F = conv-BN-ReLU-conv-BN-ReLU."""

    variant = "relu_before_addition"
    last_conv_tail = (BN, RELU)


@_register
class ReLUOnlyPreActUnit(ResidualUnit):
    """Fig. 4(d): ``x_next = h(x) + F(x)``, F = ReLU-conv-BN-ReLU-conv-BN."""

    variant = "relu_only_preact"
    preact_ops = (RELU,)


@_register
class FullPreActUnit(ResidualUnit):
    """Fig. 4(e), full pre-activation: ``x_next = h(x) + F(x)``,
    F = BN-ReLU-conv-BN-ReLU-conv. The paper's recommended unit."""

    variant = "full_preact"
    preact_ops = (BN, RELU)
    last_conv_tail = ()


PLACEMENTS = {
    cls.variant: cls
    for cls in (
        OriginalUnit,
        BNAfterAdditionUnit,
        ReLUBeforeAdditionUnit,
        ReLUOnlyPreActUnit,
        FullPreActUnit,
    )
}


def make_unit(placement, filters, **kwargs):
    """Instantiate the unit class of ``placement`` (a key of ``PLACEMENTS``)."""
    return PLACEMENTS[check_choice("placement", placement, PLACEMENTS)](filters, **kwargs)
