"""keras_preact: the pre-activation residual networks of He et al., ECCV 2016.

"Identity Mappings in Deep Residual Networks" (ResNet v2) as a Keras 3 model
zoo: one layer per residual-unit placement (Fig. 4) and per shortcut variant
(Fig. 2), network builders for the paper's CIFAR and ImageNet depths, and a
registry of ``--arch`` names.

The names below load on first use, so ``import keras_preact`` (and every
script's ``--help``) does not import a Keras backend. Where Keras is already
imported, the layers are registered with it at once, so that
``keras.saving.load_model`` finds them; ``keras_preact.load_keras_file`` always
does.
"""

import importlib
import sys

__version__ = "0.2.0"

from keras_preact.catalog import CIFAR_DEPTHS, IMAGENET_STAGES  # noqa: E402 - plain data

_BUILDERS = [f"PreActResNet{d}" for d in sorted({*CIFAR_DEPTHS, *IMAGENET_STAGES})]
_EXPORTS = {
    **{name: "models" for name in _BUILDERS},
    "PreActResNet": "models",
    "build_resnet": "models",
    "scan": "models",
    "unroll": "models",
    "preact_resnet_cifar": "models",
    "preact_resnet_imagenet": "models",
    "load_keras_file": "models",
    "load_weights": "models",
    "SHORTCUTS": "shortcuts",
    "PROJECTIONS": "catalog",
    "PLACEMENTS": "units",
    "MODELS": "registry",
    "get_model": "registry",
    "list_models": "registry",
    "model_info": "registry",
}
_SUBMODULES = ("catalog", "registry", "shortcuts", "units", "models", "preprocessing")
__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_preact.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"keras_preact.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'keras_preact' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


# The pretrained weights' sources register themselves (no Keras import): the builders'
# weights="imagenet" resolves through them.
importlib.import_module("keras_preact.convert")
if "keras" in sys.modules:  # register the layers for keras.saving.load_model
    importlib.import_module("keras_preact.models")
