"""Data: tensorflow-datasets, CIFAR archives, digits: arrays and streams.

The names of ``keras_preact.data.datasets`` are also this package's (as ``keras_preact.data``
was that module before 0.2.0); they load on first use.
"""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    import keras_preact.data.datasets as datasets

    return datasets if name == "datasets" else getattr(datasets, name)
