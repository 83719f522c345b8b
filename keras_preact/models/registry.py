"""The model registry: ``--arch`` names, their builders and metadata.

An arch name means a depth and family; the activation placement and the
shortcut are separate options (defaults: ``full_preact`` and ``identity``)::

    >>> keras_preact.list_models()
    ['resnet20', 'resnet32', ..., 'resnet200', 'resnet18_cifar']
    >>> model = keras_preact.get_model("resnet164", classes=100)
    >>> keras_preact.model_info("resnet1001")["paper_error"]["cifar10"]["full_preact"]
    4.92

The registry is plain data (no Keras import), so command lines can list and check
arch names without loading a backend; ``spec.builder`` imports the builders.
"""

import collections
import dataclasses
import importlib

from keras_preact.vocab import catalog
from keras_preact.vocab._validation import check_choice

# Test error (%) reported in He et al. 2016, by data set and unit placement.
# CIFAR: Table 2 (placements, ResNet-110 and ResNet-164 on CIFAR-10) and
# Table 3 (original vs. pre-activation, CIFAR-10 and CIFAR-100).
# ImageNet: Table 5, top-1 error of a single 320x320 crop.
PAPER_ERRORS = {
    "resnet110": {
        "cifar10": {"original": 6.61, "bn_after_addition": 8.17,
                    "relu_before_addition": 7.84, "relu_only_preact": 6.71,
                    "full_preact": 6.37},
    },
    "resnet164": {
        "cifar10": {"original": 5.93, "bn_after_addition": 6.50,
                    "relu_before_addition": 6.14, "relu_only_preact": 5.91,
                    "full_preact": 5.46},
        "cifar100": {"original": 25.16, "full_preact": 24.33},
    },
    "resnet1001": {
        "cifar10": {"original": 7.61, "full_preact": 4.92},
        "cifar100": {"original": 27.82, "full_preact": 22.71},
    },
    "resnet152": {"imagenet2012": {"original": 21.3, "full_preact": 21.1}},
    "resnet200": {"imagenet2012": {"original": 21.8, "full_preact": 20.7}},
}

# What the authors' released Torch code reports for its own runs (KaimingHe/resnet-1k-layers'
# README), by recipe, then (arch, data set, batch): CIFAR-10 test error (%) as the median and
# the mean and standard deviation of its runs, full pre-activation, identity shortcuts.
RECIPE_ERRORS = {
    "resnet-1k-layers": {
        ("resnet1001", "cifar10", 64): {"median": 4.62, "mean": 4.69, "std": 0.20},
        ("resnet1001", "cifar10", 128): {"median": 4.92, "mean": 4.89, "std": 0.14},
    },
}

# Table 1: ResNet-110 with the original unit on CIFAR-10, by shortcut of Fig. 2 (the
# paper's "fail": a test error above FAIL_ABOVE %). Exclusive gating fails for every
# initial gate bias from 0 to -5.
FAIL, FAIL_ABOVE = "fail", 20.0
PAPER_SHORTCUT_ERRORS = {
    "resnet110": {"cifar10": (
        ({"name": "identity"}, 6.61),
        ({"name": "constant_scaling", "scale": 0.0, "scale_residual": False}, FAIL),
        ({"name": "constant_scaling", "scale": 0.5, "scale_residual": False}, FAIL),
        ({"name": "constant_scaling", "scale": 0.5, "scale_residual": True}, 12.35),
        *(({"name": "exclusive_gating", "gate_bias": -float(b)}, FAIL) for b in range(6)),
        ({"name": "exclusive_gating", "gate_bias": -6.0}, 8.70),
        ({"name": "exclusive_gating", "gate_bias": -7.0}, 9.81),
        ({"name": "shortcut_only_gating", "gate_bias": 0.0}, 12.86),
        ({"name": "shortcut_only_gating", "gate_bias": -6.0}, 6.91),
        ({"name": "conv1x1"}, 12.22),
        ({"name": "dropout", "rate": 0.5}, FAIL),
    )},
}


def paper_shortcut_error(arch, dataset, shortcut):
    """Table 1's test error (%, or ``FAIL``) of ``arch`` with the original unit and this
    shortcut (a name, dict or command-line form), or ``None``."""
    wanted = catalog.resolve_shortcut(shortcut)
    for spec, error in PAPER_SHORTCUT_ERRORS.get(arch, {}).get(dataset, ()):
        if catalog.resolve_shortcut(spec) == wanted:
            return error
    return None


# Where pretrained weights come from. The builders never download: the layer above them
# (keras_preact.interop.convert, which the package imports) registers each source here.
PretrainedSource = collections.namedtuple("PretrainedSource", "fetch load")
_PRETRAINED = {}


def register_pretrained(name, fetch, load):
    """Let the builders' ``weights=name`` call ``fetch(depth, include_top) -> path``, then
    ``load(model, depth, include_top, path, keep)``."""
    _PRETRAINED[name] = PretrainedSource(fetch, load)


def pretrained_source(name):
    if name not in _PRETRAINED:
        raise ValueError(f"weights={name!r} needs keras_preact.interop.convert, which registers it: "
                         "import keras_preact.interop.convert first.")
    return _PRETRAINED[name]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What an arch name stands for."""

    name: str
    builder_name: str  # in keras_preact.models
    family: str  # "cifar" or "imagenet"
    depth: int
    form: str  # "basic" or "bottleneck"
    stage_units: tuple
    dataset: str  # the data set the paper trains it on
    input_shape: tuple
    classes: int
    params: int  # trainable parameters of the default model (full_preact, identity)
    stem: str = "cifar"
    options: tuple = ()  # (name, value) pairs the arch binds beyond its depth and stem
    source: str = ""  # where a variant comes from

    @property
    def fixed(self):
        """The builder options the arch binds (its stem, where not the family's, and
        ``options``)."""
        stem = {"stem": "cifar"} if self.family == "imagenet" and self.stem == "cifar" else {}
        return {**stem, **dict(self.options)}

    @property
    def paper_error(self):
        return PAPER_ERRORS.get(self.name, {})

    @property
    def builder(self):
        return getattr(importlib.import_module("keras_preact.models"), self.builder_name)

    def check(self, options):
        """Refuse builder ``options`` that would change what the arch binds, or that its
        bound ``preact`` does not fit (a placement without pre-activation)."""
        clash = [f"{k}={options[k]!r}" for k, v in self.fixed.items()
                 if k in options and options[k] != v]
        if clash:
            raise ValueError(f"arch {self.name!r} is PreActResNet{self.depth} with "
                             f"{_spelled(self.fixed)}; {', '.join(clash)} would make it "
                             f"another network: leave {' and '.join(c.split('=')[0] for c in clash)} "
                             "as the arch binds it, or build that network with the builder.")
        placement = options.get("placement", "full_preact")
        if "preact" in self.fixed and placement not in catalog.PREACTIVATED:
            raise ValueError(f"arch {self.name!r} is built of pre-activation units "
                             f"(preact={self.fixed['preact']!r}); placement {placement!r} has "
                             f"none: use {' or '.join(catalog.PREACTIVATED)} with it, or another "
                             "arch (resnet18_cifar).")

    def build(self, **kwargs):
        """The arch's network; ``kwargs`` go to its builder (see :meth:`check`). An arch
        that binds options names its network after itself."""
        self.check(kwargs)
        if self.options and kwargs.get("name") is None:
            placement = kwargs.get("placement", "full_preact")
            kwargs["name"] = (f"preact_{self.name}" if placement == "full_preact"
                              else f"{self.name}_{placement}")
        return self.builder(**{**kwargs, **self.fixed})


def _spelled(options):
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


def _cifar(depth, form):
    defaults = catalog.FAMILY_DEFAULTS["cifar"]
    return ModelSpec(
        name=f"resnet{depth}", builder_name=f"PreActResNet{depth}",
        family="cifar", depth=depth, form=form,
        stage_units=catalog.cifar_stage_units(depth, form), dataset="cifar10",
        input_shape=defaults["input_shape"], classes=defaults["classes"],
        params=PARAMS[f"resnet{depth}"],
    )


def _imagenet(depth, stem="imagenet", name=None, source="", **options):
    form, units = catalog.IMAGENET_STAGES[depth]
    cifar_stem = stem == "cifar"
    defaults = catalog.FAMILY_DEFAULTS["imagenet_cifar_stem" if cifar_stem else "imagenet"]
    name = name or f"resnet{depth}" + ("_cifar" if cifar_stem else "")
    return ModelSpec(
        name=name, builder_name=f"PreActResNet{depth}",
        family="imagenet", depth=depth, form=form, stage_units=units,
        dataset="cifar10" if cifar_stem else "imagenet2012",
        input_shape=defaults["input_shape"], classes=defaults["classes"],
        params=PARAMS[name], stem=stem, options=tuple(options.items()), source=source,
    )


# The PreActResNet-18s of CIFAR reproductions (32x32, 3x3/1 stem, no max-pool), as options.
CIFAR_VARIANTS = {
    # A common reproduction: stem conv-ReLU; every shortcut the raw unit input, subsampled
    # and zero-padded where the shape changes (option A); ReLU only after the last unit.
    "resnet18_cifar_option_a": dict(
        source="the option-A, raw-input PreActResNet-18 of CIFAR reproductions",
        projection="A", preact="residual", stem_activation="relu", head_activation="relu"),
    # kuangliu/pytorch-cifar's models/preact_resnet.py: a bare stem conv; a 1x1 projection
    # of the activated input where the shape changes, else the raw input; nothing after
    # the last unit.
    "resnet18_pytorch_cifar": dict(
        source="kuangliu/pytorch-cifar's PreActResNet18 (models/preact_resnet.py)",
        projection="B", preact="auto", stem_activation=None, head_activation=None),
}


# Trainable parameters of each arch's default configuration (full_preact, identity). The
# test suite rebuilds every model and checks them against a count by hand, and checks the
# paper's figures (ResNet-164 1,703,258; ResNet-1001 10,327,706) independently.
PARAMS = {
    "resnet20": 272_282, "resnet32": 466_714, "resnet44": 661_146, "resnet56": 855_578,
    "resnet110": 1_730_522, "resnet1202": 19_423_834, "resnet164": 1_703_258,
    "resnet1001": 10_327_706, "resnet18": 11_687_720, "resnet34": 21_795_880,
    "resnet50": 25_549_352, "resnet101": 44_541_480, "resnet152": 60_185_128,
    "resnet200": 64_666_152, "resnet18_cifar": 11_172_170,
    "resnet18_cifar_option_a": 10_999_114, "resnet18_pytorch_cifar": 11_171_146,
}
# The archs: every depth of the catalog's tables, and ResNet-18 with the CIFAR stem.
_SPECS = (*(_cifar(depth, form) for depth, form in catalog.CIFAR_DEPTHS.items()),
          *(_imagenet(depth) for depth in catalog.IMAGENET_STAGES),
          _imagenet(18, stem="cifar"),
          *(_imagenet(18, stem="cifar", name=name, **variant)
            for name, variant in CIFAR_VARIANTS.items()))
MODELS = {spec.name: spec for spec in _SPECS}


def list_models(family=None):
    """The arch names, optionally only those of ``family`` ("cifar"/"imagenet")."""
    if family is not None:
        check_choice("family", family, ("cifar", "imagenet"))
    return [n for n, s in MODELS.items() if family is None or s.family == family]


def get_spec(name):
    return MODELS[check_choice("arch", name, MODELS)]


def get_model(name, **kwargs):
    """Build the model of arch ``name``; ``kwargs`` go to its builder
    (``classes``, ``placement``, ``shortcut``, ``input_shape`` ...)."""
    return get_spec(name).build(**kwargs)


def model_info(name):
    """Metadata of arch ``name`` as a plain dict."""
    spec = get_spec(name)
    info = dataclasses.asdict(spec)
    info["builder"] = info.pop("builder_name")
    info["paper_error"] = spec.paper_error
    info["options"] = dict(spec.options)
    return info


def markdown_table():
    """The README's model table, generated from the registry."""
    rows = [
        "| arch | builder | family | depth | form | units per stage | params | "
        "paper error, full pre-act (%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec in MODELS.values():
        errors = ", ".join(
            f"{ds} {by.get('full_preact')}"
            for ds, by in spec.paper_error.items()
            if "full_preact" in by
        )
        family = spec.family + (" (cifar stem)" if spec.stem == "cifar" and spec.family == "imagenet" else "")
        builder = spec.builder_name + (f"({_spelled(spec.fixed)})" if spec.fixed else "")
        rows.append(
            f"| `{spec.name}` | `{builder}` | {family} | {spec.depth} | {spec.form} | "
            f"{'-'.join(map(str, spec.stage_units))} | {spec.params / 1e6:.2f}M | "
            f"{errors or '-'} |"
        )
    return "\n".join(rows)
