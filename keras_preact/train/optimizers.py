"""The optimizers of the recipes (``keras_preact.train.config.RECIPES``).

The paper's recipe trains with Keras' ``SGD``. The authors' released Torch trainer
(resnet-1k-layers on fb.resnet.torch) steps with Torch's ``optim.sgd``, whose momentum
buffer holds no learning rate, so a drop of the rate takes effect at once (Keras' buffer
holds ``lr * g`` and carries the old rate for a while); :class:`TorchSGD` is that update.
"""

import keras
from keras import ops

from keras_preact.layers import compat


@keras.saving.register_keras_serializable(package="keras_preact")
class TorchSGD(keras.optimizers.SGD):
    """Torch's ``optim.sgd`` with ``dampening=0``: for every variable ``w`` it trains,

        g = dL/dw + decay * w          (weight decay in the gradient, on every variable)
        v = momentum * v + g           (the buffer; at the first step v = g)
        w = w - lr * (g + momentum * v)  with ``nesterov``, else  w = w - lr * v

    Args:
        learning_rate, momentum, nesterov: as Keras' ``SGD`` (a schedule too).
        decay: Torch's ``weightDecay``, added to the gradient of every variable (BN's
            gamma and beta and biases included); not Keras' decoupled ``weight_decay``.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, nesterov=True, decay=0.0,
                 name="torch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                         name=name, **kwargs)
        if decay < 0:
            raise ValueError(f"decay must be at least 0, got {decay}.")
        self.decay = float(decay)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self.decay:
            g = ops.add(g, ops.multiply(variable, ops.cast(self.decay, variable.dtype)))
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(g, learning_rate))
            return
        momentum = ops.cast(self.momentum, variable.dtype)
        v = compat.slot_of(self, self.momentums, variable)
        self.assign(v, ops.add(ops.multiply(v, momentum), g))
        step = ops.add(g, ops.multiply(v, momentum)) if self.nesterov else v
        self.assign_sub(variable, ops.multiply(step, learning_rate))

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}


def make_optimizer(recipe, learning_rate, momentum, weight_decay):
    """The optimizer of ``recipe`` (a ``config.Recipe``); under the paper's recipe the weight
    decay is the kernels' L2 regulariser instead (``training.coupled_l2``)."""
    if recipe.torch_sgd:
        return TorchSGD(learning_rate, momentum=momentum, nesterov=recipe.nesterov,
                        decay=weight_decay if recipe.decay_all else 0.0)
    return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=recipe.nesterov)
