"""A training run's configuration: its fields, the paper's defaults, and every check.

Plain Python (no Keras import), so that ``scripts/train.py`` checks a whole command
line, and its ``--help`` prints, without loading a backend. Defaults reproduce
He et al. 2016 for the chosen arch:

* CIFAR: SGD momentum 0.9, batch 128, learning rate 0.1 with a 0.01 warm-up for
  the first 400 iterations, divided by 10 at 32k and 48k iterations, stop at
  64k; weight decay 1e-4 applied as the paper does, as coupled L2 on the
  weights (in Keras an L2 regulariser of 5e-5 on every kernel gives the same
  gradient ``1e-4 * w``; Keras optimizers' ``weight_decay`` is decoupled and is
  not the same thing).
* ImageNet: batch 256, 0.1 divided by 10 at epochs 30 and 60, 90 epochs;
  evaluation on a 224 center crop or the paper's 320 crop.

``--recipe resnet-1k-layers`` trains as the authors' released Torch code does instead
(``RECIPES``): Nesterov momentum in Torch's form, weight decay on every parameter, the
learning rate divided by 10 at epochs 81 and 122 of 164, no warm-up.

``--iterations``/``--epochs`` rescale the milestones (and the warm-up) proportionally;
``--warmup-iterations`` sets the warm-up's length instead (ResNet v1's rule is "0.01 until the
training error is below 80%", which is about 400 iterations on CIFAR: on a small data set and
budget that takes a larger share of the iterations than 400 of 64k).
"""

import dataclasses

from keras_preact.vocab import catalog
from keras_preact.models import registry
from keras_preact.vocab._validation import check_choice, check_float, check_int

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")
PRECISIONS = ("off", "float16", "bfloat16")
JIT_CHOICES = ("auto", "true", "false")
VERBOSITY = ("auto", "0", "1", "2")
DATASET_NAMES = ("cifar10", "cifar100", "imagenet2012", "digits")
EVAL_SIZES = (224, 320)
CIFAR_ITERATIONS = 64_000
CIFAR_MILESTONES = (32_000, 48_000)
IMAGENET_EPOCHS = 90
IMAGENET_MILESTONE_EPOCHS = (30, 60)
WARMUP_ITERATIONS, WARMUP_LR = 400, 0.01
LR_DROP = 0.1


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a run is optimised, with where it comes from."""

    name: str
    source: str
    torch_sgd: bool  # Torch's optim.sgd (its momentum buffer holds no rate) or Keras' SGD
    nesterov: bool
    decay_all: bool  # weight decay on every parameter (Torch), or coupled L2 on the kernels
    warmup: bool  # the paper's 0.01 warm-up (--no-warmup turns it off)
    cifar_epochs: int = None  # CIFAR in epochs (None: CIFAR_ITERATIONS iterations) ...
    milestone_epochs: tuple = ()  # ... and the drops after these many whole epochs
    imagenet_every: int = None  # ImageNet: a drop every this many epochs (None: the paper's)


RECIPES = {r.name: r for r in (
    Recipe("paper", "He et al. 2016 (trained in Caffe, unreleased for CIFAR): SGD momentum "
           "0.9, coupled weight decay 1e-4 on the weights, 0.1 divided by 10 at 32k "
           "and 48k iterations of 64k, a 0.01 warm-up", torch_sgd=False, nesterov=False,
           decay_all=False, warmup=True),
    # train.lua: "decay = epoch >= 122 and 2 or epoch >= 81 and 1 or 0" (1-based epochs,
    # whatever -nEpochs is); optim.sgd with nesterov, dampening 0 and weightDecay 1e-4 on
    # model:getParameters() (BN and the classifier's bias included).
    Recipe("resnet-1k-layers", "the authors' released Torch code (KaimingHe/resnet-1k-layers "
           "on facebook/fb.resnet.torch's train.lua): Nesterov SGD 0.9 with Torch's momentum "
           "buffer, weight decay 1e-4 on every parameter, 0.1 divided by 10 at epochs 81 and "
           "122, 164 epochs, no warm-up", torch_sgd=True, nesterov=True, decay_all=True,
           warmup=False, cifar_epochs=164, milestone_epochs=(80, 121), imagenet_every=30),
)}

SCAN_CHOICES = ("auto", "on", "off")
# scan_units="auto", by measurement on the 2-core CPU (scripts/benchmark.py train, batch 8):
# without XLA (TensorFlow's default on a CPU) the scanned net steps as fast as the unrolled
# one and compiles in a fraction of the time (ResNet-164 first step 34.6 -> 8.7 s, ResNet-1001
# 267 -> 11.5 s). Under XLA (JAX always; TensorFlow with jit_compile) a CPU runs the loop's
# backward convolutions 4x (JAX) to 20x (TensorFlow) slower, so XLA runs scan only the nets
# too deep to compile unrolled (ResNet-1001: out of memory unrolled on JAX, first step 22 s
# at 3.0 GB scanned). Eager (torch, jit_compile off) there is no compile to save and the
# scanned loop steps slower: ResNet-110 29.6 vs 34.2 images/s, ResNet-164 12.6 vs 13.8.
XLA_SCAN_MIN_UNITS = 300


def option(default=None, help="", group=None, *, choices=None, listed=None, metavar=None,
           network=False, volatile=False, later=False):
    """A field of :class:`TrainConfig`, declared once with what the command line says of it.

    ``help`` is the option's text (for a bool, what its switch does: ``flag``);
    ``choices`` are enforced by the parser, ``listed`` only named in the help (a callable,
    checked by ``resolve_config`` with its own message); ``network``: the field is passed
    to the network's builder as it is; ``volatile``: it may differ between two invocations
    of the same run (it is not part of the run's ``identity``); ``later``: added after
    runs were first recorded, so left out of the identity while at its default.
    ``scripts/train.py``'s options, its ``--help``,
    ``lab.experiments.train_command`` and the README's table (``options_table``) derive
    from these declarations."""
    return dataclasses.field(default=default, metadata=dict(
        help=help, group=group, choices=choices, listed=listed, metavar=metavar,
        network=network, volatile=volatile, later=later))


@dataclasses.dataclass
class TrainConfig:
    """A training run: every field is an option of ``scripts/train.py`` (``--model-dir``
    for ``model_dir``, ...), with the paper's default."""

    model_dir: str = option(
        help="the run directory (created; rerun the command to resume)", group="output",
        metavar="DIR", volatile=True)
    arch: str = option(
        "resnet164", "network", "model", metavar="ARCH", listed=lambda: registry.list_models())
    dataset: str = option(  # default: the arch's data set in the paper
        help="data set (default: the arch's data set in the paper)", group="data",
        metavar="NAME", listed=lambda: DATASET_NAMES)
    placement: str = option(
        "full_preact", "residual unit of Fig. 4", "model", metavar="NAME",
        listed=lambda: catalog.PLACEMENT_FIGURES, network=True)
    shortcut: object = option(  # a name, "NAME:key=value,...", or a dict
        "identity", "shortcut of Fig. 2, e.g. constant_scaling:scale=0.5", "model",
        metavar="NAME[:key=value,...]", listed=lambda: catalog.SHORTCUT_OPTIONS, network=True)
    projection: str = option(  # default: the arch's (B but for resnet18_cifar_option_a's A)
        help="where the shape changes: A zero-pads, B projects there, C projects on every "
        "unit (default: B; the arch's where it binds one)", group="model",
        choices=catalog.PROJECTIONS, network=True)
    recipe: str = option(
        "paper", "how to optimise: paper (He et al. 2016) or resnet-1k-layers (the authors' "
        "Torch trainer: Nesterov, decay on every parameter, epochs 81/122 of 164)",
        "optimisation", choices=tuple(RECIPES), later=True)
    batch_size: int = option(
        help="global batch size (default: 128; ImageNet 256)", group="optimisation")
    lr: float = option(0.1, "learning rate after the warm-up", "optimisation")
    momentum: float = option(0.9, "SGD momentum, in [0, 1)", "optimisation")
    weight_decay: float = option(1e-4, "weight decay, as the recipe applies it (paper: coupled L2 "
                                 "on the kernels; resnet-1k-layers: in the gradient of every "
                                 "parameter)", "optimisation")
    warmup: bool = option(True, "skip the 0.01 warm-up of the first 400 iterations (the "
                          "resnet-1k-layers recipe has none)", "optimisation")
    warmup_iterations: int = option(
        help="warm up for N iterations (default: 400, scaled down with --iterations/--epochs)",
        group="optimisation", metavar="N", later=True)
    iterations: int = option(
        help="CIFAR: total iterations (default 64k); the milestones scale with it",
        group="optimisation")
    epochs: int = option(
        help="total epochs instead (ImageNet default 90; resnet-1k-layers 164, its milestones "
        "fixed from 164 on); the milestones scale", group="optimisation")
    steps_per_epoch: int = option(
        help="batches per epoch (default: the training set's size / batch)",
        group="optimisation")
    seed: int = option(0, "seed of the data order, augmentation and initialisation",
                       "optimisation")
    deterministic: bool = option(
        False, "deterministic ops (TensorFlow, torch): a resumed run ends with the weights of an "
        "uninterrupted one", "optimisation")
    strategy: str = option(
        "auto", "auto: every visible GPU (JAX: DataParallel), else one device; multi_worker: "
        "many processes (TF_CONFIG; on JAX, KERAS_DISTRIBUTION_*)",
        "distribution and precision", choices=STRATEGIES)
    sync_bn: bool = option(
        False, "synchronised BatchNormalization across replicas (TensorFlow)",
        "distribution and precision", network=True)
    cpu_replicas: int = option(
        help="split the CPU into N logical devices (to test strategies)",
        group="distribution and precision")
    mixed_precision: str = option(
        "off", "mixed-precision compute (slower on a CPU)", "distribution and precision",
        choices=PRECISIONS)
    # (scan_units and remat change how the network is run, not what it computes: volatile; a
    # run resumes in either form, see scan_choice.)
    scan_units: str = option(
        "auto", "identical units as one scanned layer, compiled once per stage; auto: the "
        "faster form by measurement (scanned without XLA; under XLA, as on JAX, only "
        "ResNet-1001 and 1202; unrolled on torch, which runs eagerly); a run may resume in the "
        "other form", "distribution and precision",
        choices=SCAN_CHOICES, volatile=True)
    remat: bool = option(
        False, "recompute the scanned units' activations in the backward pass (less memory, "
        "about one more forward pass of time)", "distribution and precision", volatile=True)
    steps_per_execution: int = option(
        1, "training steps per compiled call: fewer round trips to the host on an "
        "accelerator (results are the same)", "distribution and precision", metavar="N",
        volatile=True)
    jit_compile: str = option(
        "auto", "compile the step (XLA; torch.compile on torch); auto: on for JAX and for "
        "TensorFlow on one GPU",
        "distribution and precision", choices=JIT_CHOICES)
    data_dir: str = option(help="tensorflow-datasets data_dir", group="data", volatile=True)
    cifar_archive: str = option(
        help="cifar-10-python.tar.gz or cifar-100-python.tar.gz, read directly", group="data",
        metavar="PATH", volatile=True)
    eval_size: int = option(
        help="imagenet2012 evaluation crop: 224 (default) or the paper's 320", group="data",
        choices=EVAL_SIZES)
    overwrite: bool = option(
        False, "discard the run in --model-dir (only what keras_preact wrote)", "output",
        volatile=True)
    verbose: object = option(
        "auto", "0 silent, 1 progress bar, 2 one line per epoch; auto: 1 on a terminal, "
        "else 2", "output", choices=VERBOSITY, volatile=True)
    plot: bool = option(True, "do not draw curves.png", "output", volatile=True)

    def identity(self):
        """The fields that define the run (what must match to resume it)."""
        values = dataclasses.asdict(self)
        return {f.name: values[f.name] for f in dataclasses.fields(self)
                if not f.metadata["volatile"]
                and not (f.metadata["later"] and values[f.name] == f.default)}


# The groups of train.py's --help (and of the README's table), in this order.
GROUPS = ("model", "data", "optimisation", "distribution and precision", "output")


def declared(group=None):
    """TrainConfig's fields (``dataclasses.Field``), by ``GROUPS`` and then as declared."""
    fields = dataclasses.fields(TrainConfig)
    return [f for g in GROUPS if group in (None, g) for f in fields if f.metadata["group"] == g]


def flag(name):
    """train.py's option for field ``name``: ``--NAME``; for a bool, its switch: ``--NAME``
    turns on a field that is off by default, ``--no-NAME`` turns off one that is on."""
    field = TrainConfig.__dataclass_fields__[name]
    prefix = "--no-" if field.type is bool and field.default else "--"
    return prefix + name.replace("_", "-")


def option_help(field):
    """The field's help, with the values of a listed choice."""
    listed = field.metadata["listed"]
    text = field.metadata["help"]
    return f"{text}; one of: {', '.join(map(str, listed()))}" if listed else text


def network_options(config):
    """The fields of ``config`` that the network's builder takes as they are."""
    return {f.name: getattr(config, f.name) for f in declared() if f.metadata["network"]}


def options_table():
    """The README's table of train.py's options, from the declarations."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for f in declared():
        if f.type is bool:
            default = ""
        elif f.default is None:
            default = "required" if f.name == "model_dir" else "-"
        else:
            default = f"`{f.default}`"
        choices = f.metadata["choices"]
        text = option_help(f) if not choices else \
            f"{f.metadata['help']}; one of: {', '.join(map(str, choices))}"
        text = text.replace("|", "\\|")
        rows.append(f"| `{flag(f.name)}` | {default} | {text} |")
    return "\n".join(rows)


def resolve_config(config):
    """Check every field and fill in the paper's defaults; return a new config.

    Raises ``ValueError`` naming the field and its valid values. Nothing is
    read from or written to disk here.
    """
    c = dataclasses.replace(config)
    if not isinstance(c.model_dir, str) or not c.model_dir.strip():
        raise ValueError("--model-dir is required: the folder that holds the run.")
    spec = registry.get_spec(c.arch)
    c.dataset = check_choice("dataset", c.dataset or spec.dataset, DATASET_NAMES)
    check_choice("placement", c.placement, catalog.PLACEMENT_FIGURES)
    c.shortcut = catalog.resolve_shortcut(c.shortcut)
    c.projection = check_choice("projection", c.projection or spec.fixed.get("projection", "B"),
                                catalog.PROJECTIONS)
    check_choice("strategy", c.strategy, STRATEGIES)
    check_choice("mixed precision", c.mixed_precision, PRECISIONS)
    c.jit_compile = check_choice("jit_compile", str(c.jit_compile).lower(), JIT_CHOICES)
    c.verbose = check_choice("verbose", str(c.verbose).lower(), VERBOSITY)
    c.scan_units = check_choice("scan_units", str(c.scan_units).lower(), SCAN_CHOICES)
    c.remat = bool(c.remat)
    if c.remat and c.scan_units == "off":
        raise ValueError("--remat recomputes the scanned units' activations: use it with "
                         "--scan-units on or auto, not off.")
    imagenet = c.dataset == "imagenet2012"
    if imagenet != (spec.family == "imagenet" and spec.stem == "imagenet"):
        raise ValueError(
            f"arch {c.arch!r} ({spec.family} family, {spec.input_shape[0]}x{spec.input_shape[1]} "
            f"input) does not match dataset {c.dataset!r}: use an ImageNet arch "
            f"({', '.join(n for n in registry.list_models('imagenet') if registry.get_spec(n).stem == 'imagenet')}) "
            "with imagenet2012 and a CIFAR arch with cifar10, cifar100 or digits."
        )
    if c.batch_size is None:
        c.batch_size = 256 if imagenet else 128
    c.batch_size = check_int("batch_size", c.batch_size, minimum=1)
    c.lr = check_float("lr", c.lr, 0.0, low_open=True)
    c.momentum = check_float("momentum", c.momentum, 0.0, 1.0, high_open=True)
    c.weight_decay = check_float("weight_decay", c.weight_decay, 0.0)
    if c.iterations is not None and c.epochs is not None:
        raise ValueError("Give --iterations or --epochs, not both.")
    recipe = RECIPES[check_choice("recipe", c.recipe, RECIPES)]
    if c.iterations is not None:
        check_int("iterations", c.iterations, minimum=1)
        if imagenet:
            raise ValueError("--iterations applies to the CIFAR schedule; ImageNet runs in "
                             "--epochs (default 90).")
        if recipe.cifar_epochs:
            raise ValueError(f"the {recipe.name} recipe runs in --epochs (default "
                             f"{recipe.cifar_epochs}), not --iterations.")
    check_int("steps_per_execution", c.steps_per_execution, minimum=1)
    for name in ("epochs", "steps_per_epoch", "cpu_replicas"):
        if getattr(c, name) is not None:
            check_int(name, getattr(c, name), minimum=1)
    check_int("seed", c.seed, minimum=0)
    if c.eval_size is None:
        c.eval_size = EVAL_SIZES[0] if imagenet else None
    elif not imagenet:
        raise ValueError("--eval-size applies to imagenet2012 (the 224 or 320 crop); CIFAR "
                         "and digits are evaluated on the whole 32x32 image.")
    else:
        c.eval_size = int(check_choice("eval size", str(c.eval_size), map(str, EVAL_SIZES)))
    if c.cifar_archive is not None and c.dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"--cifar-archive applies to cifar10 and cifar100, not {c.dataset}.")
    c.sync_bn, c.deterministic = bool(c.sync_bn), bool(c.deterministic)
    c.warmup = bool(c.warmup) and recipe.warmup
    if c.warmup_iterations is not None and not recipe.warmup:
        raise ValueError(f"the {recipe.name} recipe has no warm-up: drop --warmup-iterations, "
                         "or use --recipe paper.")
    if c.warmup_iterations is not None:
        check_int("warmup_iterations", c.warmup_iterations, minimum=1)
        if not c.warmup:
            raise ValueError("--warmup-iterations sets the length of the warm-up that "
                             "--no-warmup turns off: give one of them.")
        check_warmup(c, total_iterations(c))
    spec.check(network_options(c))
    return c


def total_iterations(config, steps_per_epoch=None):
    """The run's iterations; ``None`` where they are a number of epochs and the steps per
    epoch are not known yet (neither ``steps_per_epoch`` nor ``--steps-per-epoch``)."""
    recipe = RECIPES[config.recipe]
    imagenet = config.dataset == "imagenet2012"
    if not imagenet and config.epochs is None and not recipe.cifar_epochs:
        return config.iterations or CIFAR_ITERATIONS
    steps = steps_per_epoch or config.steps_per_epoch
    epochs = config.epochs or (IMAGENET_EPOCHS if imagenet else recipe.cifar_epochs)
    return epochs * steps if steps else None


def check_warmup(config, total):
    """Refuse a set warm-up that is not shorter than the run (``total`` iterations, where
    known): one rule for --iterations and --epochs."""
    if config.warmup and config.warmup_iterations is not None and total is not None \
            and config.warmup_iterations >= total:
        raise ValueError(f"--warmup-iterations {config.warmup_iterations} leaves none of the "
                         f"run's {_count(total, 'iteration')} at --lr: warm up for fewer.")


def scan_choice(config, xla, recorded=None, eager=False):
    """Whether the run's network is built with ``scan_units``: ``recorded``, the form a run
    whose resume state is matched by position (keras_preact 0.1's) was saved in, else
    ``--scan-units``, where ``auto`` is the faster form by measurement: unrolled where the
    step runs ``eager`` (torch), else scanned without XLA, and under XLA only from
    ``XLA_SCAN_MIN_UNITS`` units."""
    if recorded in ("on", "off"):
        return recorded == "on"
    if config.scan_units != "auto":
        return config.scan_units == "on"
    if config.remat:
        return True
    if eager:
        return False
    return not xla or sum(registry.get_spec(config.arch).stage_units) >= XLA_SCAN_MIN_UNITS


def verbosity(config, interactive):
    """Keras' ``verbose`` for ``fit``: a progress bar on a terminal, else a line per epoch."""
    return (1 if interactive else 2) if config.verbose == "auto" else int(config.verbose)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The paper's step schedule in iterations: ``values[i]`` up to ``boundaries[i]``."""

    total_iterations: int
    epochs: int
    boundaries: tuple  # iterations at which the rate changes (warm-up end, then the drops)
    values: tuple  # one more than boundaries
    warmup_iterations: int
    milestones: tuple  # the drops, in iterations
    steps_per_epoch: int = None  # of each epoch: the data set's, or all of a shorter run

    def describe(self, data_steps):
        """``390 steps per epoch, 165 epochs = 64,000 iterations`` for the data set's
        ``data_steps``; a run shorter than an epoch says how much of one it runs."""
        steps = f"{_count(self.steps_per_epoch, 'step')} per epoch" + (
            f" (of {data_steps:,})" if self.steps_per_epoch < data_steps else "")
        return (f"{steps}, {_count(self.epochs, 'epoch')} = "
                f"{_count(self.total_iterations, 'iteration')}")


def _count(n, noun):
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def schedule_for(config, steps_per_epoch):
    """The :class:`Schedule` of a resolved config with the data set's ``steps_per_epoch``;
    a warm-up that the now known total leaves no room after is refused (``ValueError``)."""
    total = total_iterations(config, steps_per_epoch)
    check_warmup(config, total)
    recipe = RECIPES[config.recipe]
    epochs = config.epochs or (IMAGENET_EPOCHS if config.dataset == "imagenet2012"
                               else recipe.cifar_epochs)
    if config.dataset == "imagenet2012" and recipe.imagenet_every:
        # fb.resnet.torch: floor((epoch - 1) / 30), a drop every 30 epochs whatever -nEpochs is
        milestones = [e * steps_per_epoch for e in range(recipe.imagenet_every, epochs,
                                                         recipe.imagenet_every)]
    elif config.dataset == "imagenet2012":
        scale = epochs / IMAGENET_EPOCHS
        milestones = [round(e * scale * steps_per_epoch) for e in IMAGENET_MILESTONE_EPOCHS]
    elif recipe.cifar_epochs:
        # By whole epochs, as train.lua drops the rate: at its epochs from cifar_epochs on
        # (whatever -nEpochs is), and at the same share (at least one epoch in) of a shorter run.
        scale = min(1.0, epochs / recipe.cifar_epochs)
        milestones = [max(1, round(e * scale)) * steps_per_epoch for e in recipe.milestone_epochs]
    else:
        scale = total / CIFAR_ITERATIONS
        milestones = [round(b * scale) for b in CIFAR_MILESTONES]
    warmup = 0 if not config.warmup else config.warmup_iterations or round(
        WARMUP_ITERATIONS * min(1.0, scale))
    boundaries, values = [], []
    if warmup:
        boundaries.append(warmup)
        values.append(WARMUP_LR)
    lr = config.lr
    for m in milestones:
        if m > (boundaries[-1] if boundaries else 0):
            boundaries.append(m)
            values.append(lr)
        lr *= LR_DROP
    values.append(lr)
    steps = min(steps_per_epoch, total)  # (a run shorter than an epoch is one short epoch)
    return Schedule(total, -(-total // steps), tuple(boundaries), tuple(values), warmup,
                    tuple(milestones), steps)


def recipe_error(config):
    """What the recipe's source reports for this configuration (``registry.RECIPE_ERRORS``:
    median, mean and std, %), or ``None``."""
    if (config.placement, config.shortcut, config.projection) != (
            "full_preact", {"name": "identity"}, "B"):
        return None
    return registry.RECIPE_ERRORS.get(config.recipe, {}).get(
        (config.arch, config.dataset, config.batch_size))


def paper_error(config):
    """The paper's test error (%) for this configuration (Tables 1 to 3 and 5; Table 1's
    "fail" as ``registry.FAIL``), or ``None``."""
    spec = registry.get_spec(config.arch)
    if config.projection != "B":
        return None
    if config.shortcut == {"name": "identity"}:
        return spec.paper_error.get(config.dataset, {}).get(config.placement)
    if config.placement == "original":
        return registry.paper_shortcut_error(config.arch, config.dataset, config.shortcut)
    return None
