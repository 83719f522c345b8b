"""What each optional part needs installed: the extras of setup.cfg, as data.

``pip install keras_preact`` installs the model core (keras, numpy, h5py); a Keras backend and
the tools come with extras. A tool that needs a module the user lacks says in one line which
extra installs it (:func:`require`, and ``keras_preact.cli.common.run`` for an import that
fails deeper down). tests/test_packaging.py holds setup.cfg to this table.
"""

from keras_preact.vocab._validation import UserError, installed

# extra -> what it is for
EXTRAS = {
    "tensorflow": "the TensorFlow backend and the training tools (tensorflow-datasets, TensorBoard)",
    "jax": "the JAX backend",
    "torch": "the PyTorch backend",
    "export": "SavedModel, LiteRT and ONNX export (TensorFlow is the engine)",
    "lab": "the digits data set, plots and the propagation figures (scikit-learn, scipy, "
           "matplotlib)",
}

# importable module -> (distribution that provides it, extra that installs it)
PROVIDERS = {
    "tensorflow": ("tensorflow", "tensorflow"),
    "tensorflow_datasets": ("tensorflow-datasets", "tensorflow"),
    "tensorboard": ("tensorboard", "tensorflow"),
    "jax": ("jax", "jax"),
    "jaxlib": ("jax", "jax"),
    "torch": ("torch", "torch"),
    "tf2onnx": ("tf2onnx", "export"),
    "onnx": ("onnx", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "ai_edge_litert": ("ai-edge-litert", "export"),
    "matplotlib": ("matplotlib", "lab"),
    "sklearn": ("scikit-learn", "lab"),
    "scipy": ("scipy", "lab"),
}


class MissingExtra(UserError, ImportError):
    """An optional module is not installed; the message names the extra that installs it."""


def install_hint(module):
    """How to install the extra that provides ``module`` (a dotted name is read by its top
    package), from an index or from a checkout; None where no extra provides it."""
    provider = PROVIDERS.get(module.partition(".")[0])
    return provider and (f'pip install "keras_preact[{provider[1]}]" (in a checkout: '
                         f'pip install ".[{provider[1]}]")')


def missing(module, what):
    """The :class:`MissingExtra` for ``what`` lacking ``module``."""
    top = module.partition(".")[0]
    distribution = PROVIDERS.get(top, (top,))[0]
    hint = install_hint(module) or f"pip install {distribution}"
    return MissingExtra(f"{what} needs {distribution}, which is not installed here: {hint}.")


def require(*modules, what):
    """Raise :class:`MissingExtra` for the first of ``modules`` that is not installed,
    saying that ``what`` (e.g. "--dataset digits") needs it and which extra installs it.
    (The caller then imports them as usual.)"""
    for module in modules:
        if not installed(module):
            raise missing(module, what)
