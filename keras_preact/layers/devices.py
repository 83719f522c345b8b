"""What the Keras backend runs on (asked by training and by the benchmarks)."""

import keras


def has_gpu():
    """Whether the backend sees a GPU."""
    if keras.backend.backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))
