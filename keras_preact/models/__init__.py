"""Models: the self-describing PreActResNet, its builders and the --arch registry.

The names of ``keras_preact.models.resnet`` are also this package's (as ``keras_preact.models``
was that module before 0.2.0); they load on first use.
"""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    if name == "registry":
        import keras_preact.models.registry as registry

        return registry
    import keras_preact.models.resnet as resnet

    return resnet if name == "resnet" else getattr(resnet, name)
