"""Compatibility fix: ``MultiWorkerMirroredStrategy`` with Keras 3's ``model.fit``.

In Keras 3.x up to at least 3.15 (keras-team/keras#20585, #20329), ``fit`` under
``tf.distribute.MultiWorkerMirroredStrategy`` fails in two places of the
TensorFlow trainer:

1. ``TensorFlowTrainer._maybe_symbolic_build`` reduces the first distributed
   batch with ``strategy.reduce``, which raises
   ``ValueError: Attempt to convert a value (PerReplica...)``. The symbolic
   build only needs shapes, so the fix takes this worker's local batch.
2. ``reduce_per_replica`` reduces every metric with ``axis=0``; scalar logs
   raise ``Invalid reduction dimension 0 for input with 0 dimensions``. The fix
   reduces scalars with ``axis=None``.

:func:`apply` patches exactly those two places, once, and only on the Keras
versions in ``AFFECTED`` with the TensorFlow backend. Nothing else changes.
"""

import keras

AFFECTED = ((3, 0), (3, 16))  # [first, first not known to be affected)
_applied = False


def keras_version():
    return tuple(int(p) for p in keras.__version__.split(".")[:2])


def needed():
    low, high = AFFECTED
    return keras.backend.backend() == "tensorflow" and low <= keras_version() < high


def apply():
    """Install the fix if this Keras needs it; return whether it is installed."""
    global _applied
    if _applied or not needed():
        return _applied
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        multi_worker = tf_trainer._collective_all_reduce_multi_worker(strategy)
        if not (multi_worker and reduction in ("auto", "mean")):
            return original_reduce(values, strategy, reduction)

        def _reduce(v):
            local = strategy.experimental_local_results(v)[0] if tf_trainer._is_per_replica_instance(v) else v
            axis = None if local.shape.rank == 0 else 0
            return strategy.reduce("MEAN", v, axis=axis)

        return tree.map_structure(_reduce, values)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda x: self.distribute_strategy.experimental_local_results(x)[0]
                    if isinstance(x, tf.distribute.DistributedValues) else x,
                    batch,
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    _applied = True
    return True
