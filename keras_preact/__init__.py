"""keras_preact: the pre-activation residual networks of He et al., ECCV 2016.

"Identity Mappings in Deep Residual Networks" (ResNet v2) as a Keras 3 model
zoo: one layer per residual-unit placement (Fig. 4) and per shortcut variant
(Fig. 2), network builders for the paper's CIFAR and ImageNet depths, and a
registry of ``--arch`` names.

One subpackage per part of the design (``docs/design/house.json``): ``vocab`` (the
paper's vocabulary as plain data), ``io`` (files), ``layers``, ``models``,
``interop`` (converters, ``weights="imagenet"``), ``data``, ``train``, ``deploy`` and
``lab``; ``tests/test_layering.py`` holds them to its import rules. The modules' paths of
0.1 (``keras_preact.training`` ...) still import the same modules (``MOVED``).

The names below load on first use, so ``import keras_preact`` (and every
script's ``--help``) does not import a Keras backend. Where Keras is already
imported, the layers are registered with it at once, so that
``keras.saving.load_model`` finds them; ``keras_preact.load_keras_file`` always
does.
"""

import importlib
import importlib.abc
import importlib.util
import sys


# Where each module of 0.1 lives now (under keras_preact).
MOVED = {
    "catalog": "vocab.catalog", "_validation": "vocab._validation",
    "files": "io.files",
    "units": "layers.units", "shortcuts": "layers.shortcuts", "scanned": "layers.scanned",
    "augment": "layers.augment", "preprocessing": "layers.preprocessing",
    "devices": "layers.devices", "compat": "layers.compat",
    "registry": "models.registry", "convert": "interop.convert",
    "config": "train.config", "training": "train.training", "rundir": "train.rundir",
    "plotting": "train.plotting",
    "export": "deploy.export", "evaluation": "deploy.evaluation", "benchmark": "deploy.benchmark",
    "analysis": "lab.analysis", "experiments": "lab.experiments",
}  # (keras_preact.models and keras_preact.data are packages that serve their old names)


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import keras_preact.training`` gives the module ``keras_preact.train.training``
    itself (one module object, so a name set on either is set on both)."""

    _specs = {}

    def find_spec(self, fullname, path, target=None):
        package, _, name = fullname.partition(".")
        if package == __name__ and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(f"{__name__}.{MOVED[spec.name.partition('.')[2]]}")
        self._specs[spec.name] = module.__spec__  # the import system sets the alias's
        return module

    def exec_module(self, module):
        # Already imported by create_module; keep its own spec (reload, find_spec).
        module.__spec__ = self._specs.pop(module.__spec__.name)


sys.meta_path.insert(0, _OldPaths())

from keras_preact.vocab.catalog import CIFAR_DEPTHS, IMAGENET_STAGES  # noqa: E402 - plain data
from keras_preact.vocab.catalog import VERSION as __version__  # noqa: E402

_BUILDERS = [f"PreActResNet{d}" for d in sorted({*CIFAR_DEPTHS, *IMAGENET_STAGES})]
_EXPORTS = {
    **{name: "models.resnet" for name in _BUILDERS},
    "PreActResNet": "models.resnet",
    "build_resnet": "models.resnet",
    "scan": "models.resnet",
    "unroll": "models.resnet",
    "preact_resnet_cifar": "models.resnet",
    "preact_resnet_imagenet": "models.resnet",
    "load_keras_file": "models.resnet",
    "load_weights": "models.resnet",
    "SHORTCUTS": "layers.shortcuts",
    "PROJECTIONS": "vocab.catalog",
    "PLACEMENTS": "layers.units",
    "MODELS": "models.registry",
    "get_model": "models.registry",
    "list_models": "models.registry",
    "model_info": "models.registry",
}
_SUBPACKAGES = ("vocab", "io", "layers", "models", "interop", "data", "train", "deploy", "lab")
__all__ = sorted(_EXPORTS) + list(_SUBPACKAGES)


def __getattr__(name):
    if name in _SUBPACKAGES or name in MOVED:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'keras_preact' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


# The pretrained weights' sources register themselves (no Keras import): the builders'
# weights="imagenet" resolves through them.
importlib.import_module("keras_preact.interop.convert")
if "keras" in sys.modules:  # register the layers (and TorchSGD) for keras.saving.load_model
    importlib.import_module("keras_preact.models.resnet")
    importlib.import_module("keras_preact.train.optimizers")
