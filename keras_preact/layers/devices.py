"""What the Keras backend runs on (asked by training and by the benchmarks)."""

import keras


def has_gpu():
    """Whether the backend sees a GPU."""
    if keras.backend.backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def compiles_by_default(distributed=False):
    """What ``jit_compile="auto"`` means for keras_preact's training: XLA on JAX; on
    TensorFlow only on one GPU (XLA fails under tf.distribute and is slower on a CPU); never
    on torch (torch.compile trained ResNet-164 no faster on an H100, 1,761 against 1,762
    images/s eager: ../shared/bench/README.md)."""
    backend = keras.backend.backend()
    return backend == "jax" or (backend == "tensorflow" and not distributed and has_gpu())
