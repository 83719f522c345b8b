"""Training with the paper's recipe: ``model.fit``, strategies, resumable run directories.

Defaults reproduce He et al. 2016 for the chosen arch:

* CIFAR: SGD momentum 0.9, batch 128, learning rate 0.1 with a 0.01 warm-up for
  the first 400 iterations, divided by 10 at 32k and 48k iterations, stop at
  64k; weight decay 1e-4 applied as the paper does, as coupled L2 on the
  weights (in Keras an L2 regulariser of 5e-5 on every kernel gives the same
  gradient ``1e-4 * w``; Keras optimizers' ``weight_decay`` is decoupled and is
  not the same thing).
* ImageNet: batch 256, 0.1 divided by 10 at epochs 30 and 60, 90 epochs.

``--iterations``/``--epochs`` rescale the milestones (and the warm-up)
proportionally. A run directory holds ``config.json``, TensorBoard logs,
``log.csv``, the ``BackupAndRestore`` state, ``best.keras``/``last.keras`` and
``results.json``; running the same command again resumes it.
"""

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time

import keras

from keras_preact import registry
from keras_preact._validation import check_choice, check_float, check_int
from keras_preact.shortcuts import PROJECTIONS, parse_shortcut
from keras_preact.units import PLACEMENTS, check_sync_bn

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")
PRECISIONS = ("off", "float16", "bfloat16")
DATASET_NAMES = ("cifar10", "cifar100", "imagenet2012", "digits")
CIFAR_ITERATIONS = 64_000
CIFAR_MILESTONES = (32_000, 48_000)
IMAGENET_EPOCHS = 90
IMAGENET_MILESTONE_EPOCHS = (30, 60)
WARMUP_ITERATIONS, WARMUP_LR = 400, 0.01

# Fields that may differ between two invocations of the same run.
VOLATILE_FIELDS = ("model_dir", "overwrite", "data_dir", "cifar_archive", "verbose", "plot")


@dataclasses.dataclass
class TrainConfig:
    model_dir: str
    arch: str = "resnet164"
    dataset: str = None  # default: the arch's data set in the paper
    placement: str = "full_preact"
    shortcut: str = "identity"
    projection: str = "B"
    batch_size: int = None  # global; default 128 (CIFAR, digits) or 256 (ImageNet)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: bool = True
    iterations: int = None
    epochs: int = None
    mixed_precision: str = "off"
    jit_compile: str = "auto"
    seed: int = 0
    deterministic: bool = False
    strategy: str = "auto"
    sync_bn: bool = False
    cpu_replicas: int = 0
    eval_size: int = 224
    data_dir: str = None
    cifar_archive: str = None
    overwrite: bool = False
    verbose: int = 1
    plot: bool = True

    def identity(self):
        """The fields that define the run (what must match to resume it)."""
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if k not in VOLATILE_FIELDS}


class PaperSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Step schedule of the paper: ``warmup_lr`` for ``warmup_steps`` iterations,
    then ``base_lr`` divided by 10 at each boundary (iterations)."""

    def __init__(self, base_lr, boundaries, warmup_steps=0, warmup_lr=0.01):
        self.base_lr = float(base_lr)
        self.boundaries = [int(b) for b in boundaries]
        self.warmup_steps = int(warmup_steps)
        self.warmup_lr = float(warmup_lr)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        drops = sum(ops.cast(step >= b, "float32") for b in self.boundaries) if self.boundaries else 0.0
        lr = self.base_lr * ops.power(0.1, drops)
        if self.warmup_steps:
            lr = ops.where(step < self.warmup_steps, self.warmup_lr, lr)
        return lr

    def get_config(self):
        return dict(base_lr=self.base_lr, boundaries=self.boundaries,
                    warmup_steps=self.warmup_steps, warmup_lr=self.warmup_lr)


keras.saving.register_keras_serializable(package="keras_preact")(PaperSchedule)


def coupled_l2(weight_decay):
    """The paper's weight decay ``wd * w`` in the gradient, as a Keras L2 regulariser."""
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None


def resolve_config(config):
    """Validate a config and fill in the paper's defaults for its arch and data set."""
    c = dataclasses.replace(config)
    spec = registry.get_spec(c.arch)
    c.dataset = check_choice("dataset", c.dataset or spec.dataset, DATASET_NAMES)
    check_choice("placement", c.placement, PLACEMENTS)
    parse_shortcut(c.shortcut)
    check_choice("projection", c.projection, PROJECTIONS)
    check_choice("strategy", c.strategy, STRATEGIES)
    check_choice("mixed precision", c.mixed_precision, PRECISIONS)
    check_choice("jit_compile", str(c.jit_compile).lower(), ("auto", "true", "false"))
    imagenet = c.dataset == "imagenet2012"
    if imagenet != (spec.family == "imagenet" and spec.stem == "imagenet"):
        raise ValueError(
            f"arch {c.arch!r} ({spec.family} family, {spec.input_shape[0]}x{spec.input_shape[1]} "
            f"input) does not match dataset {c.dataset!r}: use an ImageNet arch "
            f"({', '.join(n for n in registry.list_models('imagenet') if not n.endswith('_cifar'))}) "
            "with imagenet2012 and a CIFAR arch with cifar10, cifar100 or digits."
        )
    c.batch_size = check_int("batch_size", c.batch_size or (256 if imagenet else 128), minimum=1)
    c.lr = check_float("lr", c.lr, 0.0, low_open=True)
    c.weight_decay = check_float("weight_decay", c.weight_decay, 0.0)
    if c.iterations is not None and c.epochs is not None:
        raise ValueError("Give --iterations or --epochs, not both.")
    if c.iterations is not None:
        check_int("iterations", c.iterations, minimum=1)
    if c.epochs is not None:
        check_int("epochs", c.epochs, minimum=1)
    c.sync_bn = check_sync_bn(c.sync_bn)
    return c


def schedule_for(config, steps_per_epoch):
    """(total iterations, PaperSchedule) of a resolved config."""
    if config.dataset == "imagenet2012":
        epochs = config.epochs or IMAGENET_EPOCHS
        total = epochs * steps_per_epoch
        scale = epochs / IMAGENET_EPOCHS
        boundaries = [round(e * scale * steps_per_epoch) for e in IMAGENET_MILESTONE_EPOCHS]
    else:
        if config.epochs is not None:
            total = config.epochs * steps_per_epoch
        else:
            total = config.iterations or CIFAR_ITERATIONS
        scale = total / CIFAR_ITERATIONS
        boundaries = [round(b * scale) for b in CIFAR_MILESTONES]
    warmup = round(WARMUP_ITERATIONS * min(1.0, scale)) if config.warmup else 0
    return total, PaperSchedule(config.lr, boundaries, warmup, WARMUP_LR)


# -- strategies ----------------------------------------------------------------
def make_strategy(config):
    """A tf.distribute strategy (TensorFlow) or a keras.distribution (JAX), or None."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        devices = jax.devices()
        if config.strategy in ("auto", "mirrored") and len(devices) > 1:
            return keras.distribution.DataParallel(devices=devices)
        if config.strategy == "multi_worker":
            raise ValueError("--strategy multi_worker needs the TensorFlow backend.")
        return None
    if backend != "tensorflow":
        raise ValueError(f"Training supports the tensorflow and jax backends, not {backend!r}.")
    import tensorflow as tf

    if config.cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * config.cpu_replicas)
    if config.strategy == "multi_worker":
        from keras_preact import compat

        compat.apply()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")  # (initialises the runtime)
    if config.strategy == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    if config.strategy == "mirrored" or (config.strategy == "auto" and len(devices) > 1):
        return tf.distribute.MirroredStrategy(devices)
    return None


def replicas(strategy):
    if strategy is None:
        return 1
    if isinstance(strategy, keras.distribution.DataParallel):
        return len(strategy.device_mesh.devices.flatten())
    return strategy.num_replicas_in_sync


def is_chief():
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = tf_config.get("task", {})
    return task.get("type") in (None, "chief") or (
        task.get("type") == "worker" and task.get("index") == 0 and "chief" not in tf_config.get("cluster", {}))


def worker_id():
    task = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("task", {})
    return f"{task.get('type', 'chief')}{task.get('index', 0)}"


# -- run directory -------------------------------------------------------------
class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _atomic_save(model, path):
    """Save to a temporary sibling and rename, so a crash never leaves half a file."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".keras", dir=directory)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_json(path, obj):
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


class NaNGuard(keras.callbacks.Callback):
    """Stops at the first non-finite loss; checkpoints consult ``tripped``."""

    def __init__(self):
        super().__init__()
        self.tripped = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.tripped = batch
            self.model.stop_training = True


class Checkpoints(keras.callbacks.Callback):
    """``last.keras`` every epoch and ``best.keras`` on the best test accuracy, atomically;
    nothing is written once the NaN guard has tripped. Non-chief workers save to a
    temporary path (every worker must take part in a distributed save)."""

    def __init__(self, model_dir, guard, chief=True):
        super().__init__()
        self.dir, self.guard, self.chief = model_dir, guard, chief
        self.best = -1.0

    def _save(self, name):
        if self.chief:
            _atomic_save(self.model, os.path.join(self.dir, name))
        else:
            tmp = tempfile.mkdtemp()
            try:
                self.model.save(os.path.join(tmp, name))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.tripped is not None:
            return
        self._save("last.keras")
        acc = (logs or {}).get("val_accuracy")
        if acc is not None and acc > self.best:
            self.best = float(acc)
            self._save("best.keras")


class SafeBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that never backs up the weights of a diverged step."""

    def __init__(self, backup_dir, guard):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.tripped is None:
            super().on_epoch_end(epoch, logs)


def backup_epoch(backup_dir):
    """The epoch a backup would resume at (0 when there is none)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


def prepare_run_dir(config):
    """Create or reopen the run directory; refuse a different run unless overwrite."""
    path = os.path.join(config.model_dir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous.get("identity") != config.identity():
            if not config.overwrite:
                diff = sorted(k for k in set(previous.get("identity", {})) | set(config.identity())
                              if previous.get("identity", {}).get(k) != config.identity().get(k))
                raise ValueError(
                    f"{config.model_dir!r} holds a run with a different configuration "
                    f"(differs in: {', '.join(diff)}). Use another --model-dir, or --overwrite "
                    "to discard that run."
                )
            if is_chief():
                shutil.rmtree(config.model_dir)
    os.makedirs(config.model_dir, exist_ok=True)


def paper_error(config):
    spec = registry.get_spec(config.arch)
    shortcut = parse_shortcut(config.shortcut)
    if shortcut != {"name": "identity"} or config.projection != "B":
        return None
    return spec.paper_error.get(config.dataset, {}).get(config.placement)


# -- the training entry point ----------------------------------------------------
def train(config):
    """Train (or resume) the run described by ``config``; return its results dict."""
    config = resolve_config(config)
    # First: MultiWorkerMirroredStrategy must be configured before any TF op runs.
    strategy = make_strategy(config)
    if config.mixed_precision != "off":
        keras.mixed_precision.set_global_policy(f"mixed_{config.mixed_precision}")
    keras.utils.set_random_seed(config.seed)
    if config.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    n_replicas = replicas(strategy)
    if config.batch_size % n_replicas:
        raise ValueError(
            f"The global batch size {config.batch_size} is not divisible by the "
            f"{n_replicas} replicas; use a multiple of {n_replicas}."
        )
    chief = is_chief()
    prepare_run_dir(config)
    backup_dir = os.path.join(config.model_dir, "backup", worker_id())
    start_epoch = backup_epoch(backup_dir)

    from keras_preact import data as data_lib

    data = data_lib.make_data(
        config.dataset, config.batch_size, seed=config.seed, data_dir=config.data_dir,
        cifar_archive=config.cifar_archive, eval_size=config.eval_size,
    )
    total_iterations, schedule = schedule_for(config, data.steps_per_epoch)
    epochs = math.ceil(total_iterations / data.steps_per_epoch)

    record = {
        "identity": config.identity(),
        "resolved": dataclasses.asdict(config),
        "total_iterations": total_iterations,
        "epochs": epochs,
        "steps_per_epoch": data.steps_per_epoch,
        "replicas": n_replicas,
        "normalisation": {"mean": data.mean, "std": data.std},
        "input_shape": data.input_shape,
        "classes": data.classes,
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
    }
    if chief:
        _write_json(os.path.join(config.model_dir, "config.json"), record)

    jit = str(config.jit_compile).lower()
    if jit == "auto":
        # TF: XLA fails under tf.distribute and is slower on CPU. JAX always compiles.
        jit = True if keras.backend.backend() == "jax" else (strategy is None and _has_gpu())
    else:
        jit = jit == "true"
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = registry.get_model(
            config.arch, classes=data.classes, input_shape=data.input_shape,
            placement=config.placement, shortcut=parse_shortcut(config.shortcut),
            projection=config.projection, sync_bn=config.sync_bn,
            kernel_regularizer=coupled_l2(config.weight_decay), classifier_activation=None,
        )
        model.compile(
            optimizer=keras.optimizers.SGD(schedule, momentum=config.momentum),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit,
        )
    guard = NaNGuard()
    callbacks = [
        guard,
        SafeBackup(backup_dir, guard),
        keras.callbacks.CSVLogger(_worker_path(config.model_dir, chief, "log.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(config.model_dir, "tensorboard", worker_id())),
        Checkpoints(config.model_dir, guard, chief=chief),
    ]
    started = time.time()
    history = model.fit(
        data.train_stream(epochs, start_epoch), epochs=epochs,
        steps_per_epoch=data.steps_per_epoch,
        validation_data=data.test, callbacks=callbacks, verbose=config.verbose, shuffle=False,
    )
    wall = time.time() - started
    if guard.tripped is not None:
        raise TrainingDiverged(
            f"The loss became NaN or infinite (epoch {len(history.epoch) + start_epoch}, "
            f"batch {guard.tripped}). Training stopped; the last good checkpoint is kept "
            f"in {os.path.join(config.model_dir, 'last.keras')!r}. Try a lower --lr or "
            "keep the warm-up on."
        )

    loss, accuracy = model.evaluate(data.test, verbose=0)
    results = {
        "arch": config.arch, "dataset": config.dataset, "placement": config.placement,
        "shortcut": config.shortcut, "test_error": round(100.0 * (1.0 - accuracy), 3),
        "test_loss": float(loss), "paper_error": paper_error(config),
        "iterations": int(model.optimizer.iterations.numpy()), "epochs": epochs,
        "resumed_from_epoch": start_epoch, "wall_time_s": round(wall, 1),
        "replicas": n_replicas, "weights_sha256": weights_digest(model.weights),
        "trainable_weights_sha256": weights_digest(model.trainable_weights),
    }
    if chief:
        _write_json(os.path.join(config.model_dir, "results.json"), results)
        if config.plot:
            from keras_preact import plotting

            plotting.plot_runs([config.model_dir], os.path.join(config.model_dir, "curves.png"))
    paper = results["paper_error"]
    print(f"final weights sha256 {results['weights_sha256']}, trainable weights sha256 "
          f"{results['trainable_weights_sha256']} ({worker_id()})")
    print(f"test error {results['test_error']:.2f}%"
          + (f" (paper: {paper:.2f}% for {config.arch} {config.placement} on {config.dataset})"
             if paper is not None else " (the paper reports no figure for this configuration)"))
    return results


def weights_digest(weights):
    """SHA-256 of a list of variables, in order (equal weights, equal digest)."""
    import hashlib

    digest = hashlib.sha256()
    for w in weights:
        digest.update(keras.ops.convert_to_numpy(w.value).tobytes())
    return digest.hexdigest()


def _worker_path(model_dir, chief, name):
    """``model_dir/name`` for the chief, ``model_dir/workers/<id>/name`` for the others."""
    if chief:
        return os.path.join(model_dir, name)
    directory = os.path.join(model_dir, "workers", worker_id())
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, name)


def _has_gpu():
    if keras.backend.backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))
