"""Where keras_preact leans on Keras internals: the one module that does.

Every use names the Keras versions it was checked on and has a test that
fails when Keras changes it (``tests/test_compat.py``, ``tests/test_training.py``).

* Keras' error texts, read to say in one line what went wrong when a file is loaded:
  :func:`refuses_unsafe_code` and :func:`weights_mismatch`.
* Which optimizer variables belong to which model variable (:func:`optimizer_slots`),
  for a resume state that does not depend on the order of the variables, and in an
  optimizer's own update step (:func:`slot_of`).
* The ``MultiWorkerMirroredStrategy`` fix of Keras 3's TensorFlow trainer, below.

The fix: ``MultiWorkerMirroredStrategy`` with Keras 3's ``model.fit``.

Keras 3 (keras-team/keras#20585, #20329; seen on 3.15) fails in two places of the
TensorFlow trainer under ``tf.distribute.MultiWorkerMirroredStrategy``:

1. ``TensorFlowTrainer._maybe_symbolic_build`` reduces the first distributed
   batch with ``strategy.reduce``, which raises
   ``ValueError: Attempt to convert a value (PerReplica...)``. The symbolic
   build only needs shapes, so the fix takes this worker's local batch; that is
   right on every version, so it replaces the method.
2. ``reduce_per_replica`` reduces every metric with ``axis=0``; scalar logs
   raise ``Invalid reduction dimension 0 for input with 0 dimensions``. The fix
   reduces scalars with ``axis=None``. It is detected by behaviour: Keras' own
   function runs first and the fix is used only when it fails with exactly that
   error, so a Keras that fixed the bug runs unchanged.

:func:`apply` installs both, once, on the TensorFlow backend, after checking
that the private trainer code still has the shape they were written for; a Keras
whose trainer changed is refused loudly rather than patched blindly.
:data:`USED` records which fixes actually ran.
"""

import functools
import inspect
import re

import keras

from keras_preact.vocab._validation import UserError

REDUCE_SYMPTOM = "Invalid reduction dimension"
USED = set()  # the names of the fixes that ran in this process
_applied = False


# -- optimizer state by model variable (checked on Keras 3.15) -------------------------
def optimizer_slots(optimizer, variables):
    """``({variable.path: {slot: optimizer variable}}, [the optimizer's other variables])``
    for the model ``variables`` the optimizer was built for.

    Keras names each per-variable optimizer variable after its model variable:
    ``add_variable_from_reference`` calls it ``{variable.path with "/" as "_"}_{slot}``
    (``stage1_unit1_conv1_kernel_momentum``); Keras has no public map from one to the
    other. Model variables whose names coincide once "/" reads "_" are refused
    (``ValueError``); an optimizer variable named after none is one of the others."""
    prefixes = {v.path.replace("/", "_") + "_": v.path for v in variables}
    if len(prefixes) != len(variables):
        raise ValueError("two model variables share a name once '/' reads '_': their "
                         "optimizer variables cannot be told apart.")
    slots, others = {}, []
    for variable in optimizer.variables:
        name = variable.name
        # (the longest prefix that names a model variable: "conv1_kernel_" before "conv1_")
        cuts = [i + 1 for i, c in enumerate(name) if c == "_"]
        prefix = next((name[:i] for i in reversed(cuts) if name[:i] in prefixes), None)
        if prefix is None:
            others.append(variable)
        else:
            slots.setdefault(prefixes[prefix], {})[name[len(prefix):]] = variable
    return slots, others


def slot_of(optimizer, slot_list, variable):
    """The entry of ``slot_list`` (one per variable the optimizer was built for, in that
    order) that belongs to ``variable``, in ``update_step``: found as Keras' own SGD finds
    it, by the private ``_get_variable_index`` (Keras 3.9-3.15)."""
    return slot_list[optimizer._get_variable_index(variable)]


# -- Keras' error texts (checked on Keras 3.8-3.15) ----------------------------------
def refuses_unsafe_code(error):
    """Whether ``keras.saving.load_model(..., safe_mode=True)`` raised ``error`` because
    the file carries code (a ``Lambda`` layer): Keras says so only in its message."""
    return "safe_mode" in str(error) or "unsafe" in str(error).lower()


def weights_mismatch(error):
    """What ``model.load_weights`` of a ``.weights.h5`` file says does not fit, in a few
    words (the first variable whose shape differs, or how many layers failed and the
    first failure), or None when ``error`` is not one of those messages."""
    text = str(error)
    shape = r"(\([^)]*\)|torch\.Size\(\[[^\]]*\]\))"  # (torch prints its shapes so)
    found = re.search(rf"variable\.shape={shape}, Received: value\.shape={shape}"
                      r".*?path=([^,\s]+)", text, re.S)
    if found:
        model, file = (str(tuple(int(n) for n in re.findall(r"\d+", s))) for s in found.group(1, 2))
        return f"the first mismatch is {found.group(3)}: {file} in the file, {model} in the model"
    # Keras' summary of layers it could not load: the count, then the first one's error.
    many = re.match(r"A total of (\d+) objects could not be loaded\..*?:\s*\n\s*(.+)", text,
                    re.S)
    if many:
        return (f"{many.group(1)} layers could not be loaded; the first: "
                f"{many.group(2).strip().splitlines()[0]}")
    return None


def _trainer():
    from keras.src.backend.tensorflow import trainer as tf_trainer

    return tf_trainer


def check_trainer(tf_trainer):
    """Raise ``UserError`` unless the private code the fix wraps is as expected."""
    problems = [f"no {name}" for name in ("reduce_per_replica", "_is_per_replica_instance",
                                          "_collective_all_reduce_multi_worker", "TensorFlowTrainer")
                if not hasattr(tf_trainer, name)]
    if not problems:
        build = getattr(tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build", None)
        if build is None or list(inspect.signature(build).parameters) != [
                "self", "iterator", "data_batch"]:
            problems.append("a different TensorFlowTrainer._maybe_symbolic_build")
        if list(inspect.signature(tf_trainer.reduce_per_replica).parameters) != [
                "values", "strategy", "reduction"]:
            problems.append("a different reduce_per_replica")
    if problems:
        raise UserError(
            f"keras_preact's MultiWorkerMirroredStrategy fix does not fit Keras "
            f"{keras.__version__} (its TensorFlow trainer has {', '.join(problems)}). Use "
            "--strategy mirrored on one machine, or a Keras version from 3.9 to 3.15.")


def with_fallback(original, fix, symptom, name):
    """``original``, unless it raises an error whose message holds ``symptom``: then ``fix``."""

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - only the bug's own error is caught
            if symptom not in str(e):
                raise
        USED.add(name)
        return fix(*args, **kwargs)

    return wrapper


def apply():
    """Install the fix (TensorFlow backend); return whether it is installed."""
    global _applied
    if _applied or keras.backend.backend() != "tensorflow":
        return _applied
    import tensorflow as tf
    from keras import tree

    tf_trainer = _trainer()
    check_trainer(tf_trainer)
    original_reduce = tf_trainer.reduce_per_replica

    def reduce_scalars(values, strategy, reduction):
        def _reduce(v):
            local = (strategy.experimental_local_results(v)[0]
                     if tf_trainer._is_per_replica_instance(v) else v)
            return strategy.reduce("MEAN", v, axis=None if local.shape.rank == 0 else 0)

        if tf_trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
            return tree.map_structure(_reduce, values)
        return original_reduce(values, strategy, reduction)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        USED.add("symbolic_build")
        if iterator is not None:
            # (Keras' epoch iterator yields (step, it) up to 3.10, (begin, end, it) later)
            for *_, it in iterator:
                data_batch = tree.map_structure(
                    lambda x: self.distribute_strategy.experimental_local_results(x)[0]
                    if isinstance(x, tf.distribute.DistributedValues) else x,
                    next(it),
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = with_fallback(original_reduce, reduce_scalars,
                                                  REDUCE_SYMPTOM, "reduce_per_replica")
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    _applied = True
    return True
