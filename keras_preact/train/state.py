"""A network's training state keyed by the unrolled network's names, whatever its form.

``dump`` and ``load`` carry the weights and the optimizer's state (its step count, and each
weight's momentum, keyed as the weight is: ``momentum/stage1_unit5/conv1/kernel``), so a
run's resume state written by a scanned network loads into an unrolled one and back
(``keras_preact.layers.scanned`` keeps one unit's slice of a stacked weight under the
unit's own name).
"""

import keras
import numpy as np

from keras_preact.layers import compat
from keras_preact.layers.scanned import assign_places, unrolled_variables

WEIGHTS, OPTIMIZER = "weights/", "optimizer/"


def _places(model):
    """``(weight places, {slot: optimizer-variable places}, the optimizer's others)``:
    where each unrolled path's weight and optimizer state live in ``model``."""
    places = unrolled_variables(model)
    optimizer = model.optimizer
    if optimizer is None:
        return places, {}, []
    slots, others = compat.optimizer_slots(optimizer, model.trainable_variables)
    by_slot = {}
    for path, (variable, index) in places.items():
        for slot, held in slots.get(variable.path, {}).items():
            by_slot.setdefault(slot, {})[path] = (held, index)
    return places, by_slot, others


def dump(model):
    """``{key: numpy array}``: the weights and optimizer state of ``model``, by unrolled
    name (``weights/<path>``, ``<slot>/<path>``, ``optimizer/<name>``)."""
    places, by_slot, others = _places(model)
    out = {}
    for prefix, held in [(WEIGHTS, places)] + [(f"{s}/", p) for s, p in by_slot.items()]:
        for path, (variable, index) in held.items():
            value = keras.ops.convert_to_numpy(variable.value)
            out[prefix + path] = value if index is None else value[index]
    out.update({key: keras.ops.convert_to_numpy(v.value) for key, v in _keyed(others)})
    return out


def _keyed(others):
    """``(key, variable)`` of the optimizer's variables that belong to no weight: by name,
    a name that repeats numbered by its occurrence (a ``LossScaleOptimizer`` has an
    ``iteration`` of its own beside its inner optimizer's)."""
    seen = {}
    for variable in others:
        seen[variable.name] = seen.get(variable.name, 0) + 1
        count = seen[variable.name]
        yield OPTIMIZER + variable.name + ("" if count == 1 else f"#{count}"), variable


def load(model, state):
    """Set ``model``'s weights and optimizer state from ``dump``'s ``state`` (of a network
    of the same configuration, in either form); ``ValueError`` naming what does not fit."""
    places, by_slot, others = _places(model)
    wanted = {WEIGHTS + p for p in places}
    wanted |= {f"{s}/{p}" for s, held in by_slot.items() for p in held}
    wanted |= {key for key, _ in _keyed(others)}
    missing, extra = sorted(wanted - set(state)), sorted(set(state) - wanted)
    if missing or extra:
        raise ValueError(
            "the resume state does not fit the network: "
            + "; ".join(f"{len(names)} {what} (e.g. {names[0]})"
                        for names, what in ((missing, "missing"), (extra, "not in the network"))
                        if names))
    for prefix, held in [(WEIGHTS, places)] + [(f"{s}/", p) for s, p in by_slot.items()]:
        assign_places(held, {p: _fit(state[prefix + p], variable, index)
                             for p, (variable, index) in held.items()})
    for key, variable in _keyed(others):
        variable.assign(_fit(state[key], variable, None))


def _fit(value, variable, index):
    shape = tuple(variable.shape if index is None else variable.shape[1:])
    if tuple(np.shape(value)) != shape:
        raise ValueError(f"the resume state holds {variable.path} as {tuple(np.shape(value))}, "
                         f"the network as {shape}")
    return value
