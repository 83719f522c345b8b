"""Identical residual units as one layer, applied with ``keras.ops.scan``.

Units 2..n of a stage are the same function with different weights (in ResNet-1001,
110 of them per stage). ``ScannedUnits`` holds their weights stacked along a leading
unit axis and applies one template unit per step of a scan, statelessly
(``Layer.stateless_call``), so tracing and compiling cost one unit whatever the depth.
It is numerically the unrolled chain ``unit_n(... unit_1(x))``: the same outputs, the
same gradients, and in training the same updated BN statistics, which each step hands
on and which are assigned once after the loop. With ``remat=True`` each step's
activations are recomputed in the backward pass (``keras.remat``), so activation
memory no longer grows with the number of units; the step is pure, so the
recomputation cannot update BN twice.

``keras_preact.interop.convert.scan(model)`` and ``keras_preact.interop.convert.unroll(model)`` turn a
network into the other form with the same weights.
"""

import re

import keras
from keras import ops

from keras_preact.vocab._validation import check_int


@keras.saving.register_keras_serializable(package="keras_preact")
class ScannedUnits(keras.layers.Layer):
    """``count`` residual units of one configuration, applied in sequence by a scan.

    Args:
        unit: the template: a residual unit (``keras_preact.layers.units``, or any layer
            with a ``clone()``), or its serialised form. Its name is the first
            unit's (``stage1_unit2``); it must keep its input's shape (units 2..n of
            a stage).
        count: the number of units (at least 1).
        remat: recompute each unit's activations in the backward pass.
    """

    def __init__(self, unit, count, remat=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(unit, dict):  # built by build(), with the stacks
            unit = keras.saving.deserialize_keras_object(
                {k: v for k, v in unit.items() if k != "build_config"})
        if not isinstance(unit, keras.layers.Layer):
            raise TypeError(f"`unit` must be a residual unit layer, got {unit!r}.")
        self.count = check_int("count", count, minimum=1)
        self.remat = bool(remat)
        # Held in a plain box, which Keras does not track: the template's own variables
        # are never used (each step gets its slice of the stacked ones), so they must
        # not count as the layer's weights.
        self._box = _Box(unit)
        self.slots = []  # (path inside a unit, stacked weight), in the template's order

    @property
    def template(self):
        """The unit applied at every step (its own variables unused)."""
        return self._box.unit

    @property
    def unit_names(self):
        """The names of the units this layer holds, as the unrolled network names them."""
        return unit_names(self.template.name, self.count)

    def build(self, input_shape):
        if tuple(self.template.compute_output_shape(input_shape)) != tuple(input_shape):
            raise ValueError(
                f"{self.name}: a scanned unit must keep its input's shape, but "
                f"{self.template.name} maps {input_shape} to "
                f"{self.template.compute_output_shape(input_shape)}.")
        # Each unit is initialised as the unrolled network initialises it: a fresh unit
        # of the same configuration, built and stacked.
        units = [self.template] + [self.template.clone() for _ in range(self.count - 1)]
        for unit in units:
            unit.build(input_shape)
        weights = {id(v) for v in self.template.weights}
        for i, v in enumerate(self.template.variables):
            if id(v) not in weights:  # a SeedGenerator's state (the dropout shortcut)
                continue
            path = v.path.split(f"{self.template.name}/", 1)[-1]
            stacked = self.add_weight(
                shape=(self.count, *v.shape), dtype=v.dtype, trainable=v.trainable,
                name=path.replace("/", "_"), regularizer=_regularizer(v),
                # Read as stored: under mixed precision each sublayer of the template casts
                # its own slice, as it casts its own variable in the unrolled network.
                autocast=False,
                initializer=_Stacked([u.variables[i] for u in units]),
            )
            self.slots.append((path, stacked))
        # Random state: one generator for the whole scan; unit i of a step draws from
        # its state offset by i in the seed, so no two units share a stream.
        self.seed_generator = (keras.random.SeedGenerator(name="seed_generator")
                               if len(weights) < len(self.template.variables) else None)
        stacks = {id(v): stacked for v, (_, stacked) in zip(
            [v for v in self.template.variables if id(v) in weights], self.slots)}
        self._state = [stacks.get(id(v)) for v in self.template.non_trainable_variables]
        self.built = True

    def call(self, x, training=None):
        template = self.template
        trainable = [v for _, v in self.slots if v.trainable]
        stacks = [v for v in self._state if v is not None]
        seed = None if self.seed_generator is None else self.seed_generator.next()

        def unit(x, weights, state_values):
            return template.stateless_call(weights, state_values, x, training=training)

        if self.remat:
            unit = keras.remat(unit)

        def step(carry, slices):
            x, values = carry
            i, weights = slices
            it = iter(values)
            state = [next(it)[i] if v is not None else
                     seed + ops.cast(ops.stack([i, 0]), seed.dtype)
                     for v in self._state]
            y, new = unit(x, weights, state)
            # The updated statistics go back into their stacks, which the carry hands on
            # (they carry no gradient: BN's moving averages are not differentiated).
            new = [ops.stop_gradient(n) for n, v in zip(new, self._state) if v is not None]
            # (A select, not a dynamic update: TensorFlow has no gradient for the latter
            # inside a while loop, even of a stopped value.)
            values = [ops.where(ops.reshape(ops.arange(self.count) == i,
                                            (-1,) + (1,) * (len(s.shape) - 1)), n[None], s)
                      for s, n in zip(values, new)]
            return (y, values), None

        weights = [w.value for w in trainable]
        if keras.backend.backend() == "tensorflow":
            # Keras' TensorFlow scan holds its slices in TensorArrays of no stated bound,
            # which XLA refuses (jit_compile=True); a bounded while loop over the step does
            # the same. (JAX needs the scan: its while loop has no reverse-mode gradient.)
            _, y, values = ops.while_loop(
                lambda i, y, values: i < self.count,
                lambda i, y, values: (i + 1, *step((y, values), (i, [w[i] for w in weights]))[0]),
                (0, x, [s.value for s in stacks]), maximum_iterations=self.count)
        else:
            (y, values), _ = ops.scan(step, (x, [s.value for s in stacks]),
                                      (ops.arange(self.count), weights))
        if training:
            for variable, value in zip(stacks, values):
                variable.assign(value)
        return y

    def compute_output_shape(self, input_shape):
        return input_shape

    def unit_weights(self, index):
        """``{path inside a unit: value}`` of unit ``index`` (0-based)."""
        return {path: v.value[index] for path, v in self.slots}

    def get_config(self):
        return {**super().get_config(), "unit": keras.saving.serialize_keras_object(
            self.template), "count": self.count, "remat": self.remat}


def runs(keys):
    """Where to scan: ``(start, count)`` of each maximal run of equal, non-None keys.

    ``keys[i]`` describes unit ``i`` of a chain (its configuration apart from its name),
    or is None for a unit that changes its input's shape. A run of one unit is kept as
    it is: ``count`` 1 means "leave unrolled".
    """
    out, start = [], 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] is None or keys[i] != keys[start]:
            out.append((start, i - start))
            start = i
    return out


def residual_units(model):
    """``(unit, count)`` of each residual-unit layer of ``model`` (and of the models
    inside it) in order: a unit with count 1, or a ``ScannedUnits``' template with its
    count."""
    for layer in model.layers:
        if isinstance(layer, ScannedUnits):
            yield layer.template, layer.count
        elif hasattr(layer, "shortcut_spec"):  # a keras_preact.layers.units.ResidualUnit
            yield layer, 1
        elif isinstance(getattr(layer, "layers", None), list):  # a network inside a model
            yield from residual_units(layer)


def unrolled_weights(model):
    """``{path: value}`` of every weight of ``model`` as the unrolled network names it
    (``stage1_unit5/conv1/kernel``), whichever form ``model`` is in."""
    out = {}
    for layer in model.layers:
        if isinstance(layer, ScannedUnits):
            for i, name in enumerate(layer.unit_names):
                out.update({f"{name}/{path}": value
                            for path, value in layer.unit_weights(i).items()})
        else:
            out.update({w.path: w.value for w in layer.weights})
    return out


def unrolled_variables(model):
    """``{unrolled path: (variable, unit index or None)}``: where each weight of the
    unrolled network lives in ``model``."""
    out = {}
    for layer in model.layers:
        if isinstance(layer, ScannedUnits):
            for i, name in enumerate(layer.unit_names):
                out.update({f"{name}/{path}": (v, i) for path, v in layer.slots})
        else:
            out.update({w.path: (w, None) for w in layer.weights})
    return out


def assign_unrolled(model, values):
    """Set ``model``'s weights from ``{unrolled path: value}`` (``unrolled_weights``)."""
    assign_places(unrolled_variables(model), values)


def assign_places(places, values):
    """Set each variable of ``places`` (``{unrolled path: (variable, unit index or None)}``,
    as ``unrolled_variables`` gives them) from ``values`` (``{unrolled path: value}``); a
    stacked variable takes the values of all its units at once."""
    stacks = {}
    for path, (variable, index) in places.items():
        value = values[path]
        if index is None:
            variable.assign(value)
        else:
            stacks.setdefault(id(variable), (variable, {}))[1][index] = value
    for variable, by_index in stacks.values():
        variable.assign(ops.stack([ops.convert_to_tensor(by_index[i], dtype=variable.dtype)
                                   for i in range(variable.shape[0])]))


def unit_names(first, count):
    """``stage1_unit2`` and 3 -> ``[stage1_unit2, stage1_unit3, stage1_unit4]``."""
    found = re.fullmatch(r"(.*?)(\d+)", first)
    if not found:
        return [first] + [f"{first}_{i}" for i in range(2, count + 1)]
    prefix, start = found.group(1), int(found.group(2))
    return [f"{prefix}{start + i}" for i in range(count)]


def scanned_name(first, count):
    """The layer name of a scan of ``count`` units from ``first``: ``stage1_units2to18``."""
    found = re.fullmatch(r"(.*?)unit(\d+)", first)
    if found:
        prefix, start = found.group(1), int(found.group(2))
        return f"{prefix}units{start}to{start + count - 1}"
    return f"{first}_x{count}"


def _regularizer(variable):
    return getattr(variable, "regularizer", None)


class _Stacked:
    """The initializer of a stacked variable: the values of one variable per unit."""

    def __init__(self, variables):
        self.variables = variables

    def __call__(self, shape, dtype=None):
        return ops.stack([v.value for v in self.variables])


class _Box:
    """A value kept out of Keras' tracking of a layer's attributes."""

    def __init__(self, unit):
        self.unit = unit
