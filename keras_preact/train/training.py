"""Training with the paper's recipe: ``model.fit``, strategies, resumable run directories.

``train(TrainConfig(...))`` checks the whole configuration, loads the data and
builds the model before it touches the disk; then it opens the run directory
(:mod:`keras_preact.train.rundir`: locked, recognised by its marker, resumed from the
newest intact backup) and fits. The settings and their paper defaults are in
:mod:`keras_preact.train.config`.
"""

import contextlib
import dataclasses
import hashlib
import math
import os
import shlex
import sys
import tempfile
import time

import keras
import numpy as np

from keras_preact.io import files
from keras_preact.models import registry
from keras_preact.train import rundir
from keras_preact.train.optimizers import make_optimizer
from keras_preact.layers.scanned import ScannedUnits
from keras_preact.layers.devices import compiles_by_default
from keras_preact.vocab._validation import UserError, installed
from keras_preact.train.config import (  # noqa: F401 - the configuration API is public here too
    DATASET_NAMES,
    PRECISIONS,
    RECIPES,
    STRATEGIES,
    TrainConfig,
    network_options,
    paper_error,
    recipe_error,
    resolve_config,
    scan_choice,
    schedule_for,
    verbosity,
)


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite."""


def coupled_l2(weight_decay):
    """The paper's weight decay ``wd * w`` in the gradient, as a Keras L2 regulariser."""
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None


def learning_rate(schedule):
    """The :class:`~keras_preact.train.config.Schedule` as a Keras schedule.

    ``PiecewiseConstantDecay`` gives ``values[i]`` while ``step <= boundaries[i]``;
    the paper's rate changes *at* an iteration, hence ``b - 1``.
    """
    if not schedule.boundaries:
        return schedule.values[0]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [b - 1 for b in schedule.boundaries], list(schedule.values))


# -- strategies ----------------------------------------------------------------
def check_backend(config):
    """The checks that depend on the Keras backend (before anything is created)."""
    backend = keras.backend.backend()
    from keras_preact.layers.units import check_sync_bn

    check_sync_bn(config.sync_bn)
    if backend == "torch" and config.strategy in ("mirrored", "multi_worker"):
        raise ValueError(f"--strategy {config.strategy} needs the TensorFlow or JAX backend: "
                         "Keras' torch backend trains on one device.")
    if backend == "torch" and config.cpu_replicas:
        raise ValueError("--cpu-replicas needs the TensorFlow backend: Keras' torch backend "
                         "trains on one device.")
    if backend == "torch" and config.steps_per_execution != 1:
        raise ValueError("--steps-per-execution needs the TensorFlow or JAX backend: Keras' "
                         "torch trainer runs one step per call (leave it at 1).")
    if backend == "jax" and config.strategy == "multi_worker":
        rundir.check_jax_cluster()
    elif rundir.jax_process():
        raise ValueError("KERAS_DISTRIBUTION_NUM_PROCESSES describes a cluster of JAX "
                         "processes: pass --strategy multi_worker on the JAX backend to join "
                         "it, or unset Keras' KERAS_DISTRIBUTION_* variables.")
    if backend != "tensorflow" and config.cpu_replicas:
        raise ValueError("--cpu-replicas needs the TensorFlow backend; on JAX, set "
                         "XLA_FLAGS=--xla_force_host_platform_device_count=N instead.")


def make_strategy(config):
    """A tf.distribute strategy (TensorFlow) or a keras.distribution (JAX), or None."""
    if keras.backend.backend() == "jax":
        if config.strategy == "multi_worker":  # joins the cluster of KERAS_DISTRIBUTION_*
            keras.distribution.initialize()
        import jax

        devices = jax.devices()  # (every process's)
        if config.strategy == "multi_worker" or (
                config.strategy in ("auto", "mirrored") and len(devices) > 1):
            return keras.distribution.DataParallel(devices=devices)
        return None
    if keras.backend.backend() == "torch":
        return None  # one device: the GPU where there is one (Keras' choice)
    import tensorflow as tf

    if config.cpu_replicas:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * config.cpu_replicas)
    if config.strategy == "multi_worker":
        from keras_preact.layers import compat

        compat.apply()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")  # (initialises the runtime)
    if config.strategy == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    if config.strategy == "mirrored" or (config.strategy == "auto" and len(devices) > 1):
        return tf.distribute.MirroredStrategy(devices)
    return None


def _local_devices(strategy):
    """The devices among which this process splits each of its batches, evenly, under a JAX
    ``DataParallel`` (1 otherwise: tf.distribute splits uneven batches itself)."""
    if isinstance(strategy, keras.distribution.DataParallel):
        import jax

        return jax.local_device_count()
    return 1


def replicas(strategy):
    if strategy is None:
        return 1
    if isinstance(strategy, keras.distribution.DataParallel):
        return len(strategy.device_mesh.devices.flatten())
    return strategy.num_replicas_in_sync


def _worker_path(model_dir, chief, name):
    """``model_dir/name`` for the chief, ``model_dir/workers/<id>/name`` for the others."""
    if chief:
        return os.path.join(model_dir, name)
    directory = os.path.join(model_dir, rundir.WORKERS, rundir.worker_id())
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, name)


# -- callbacks -----------------------------------------------------------------------
class StopOnNaN(keras.callbacks.Callback):
    """Raise at the first step whose loss is NaN or infinite, before any epoch-end callback
    runs, so no backup or checkpoint of it is written. (Keras' ``TerminateOnNaN`` does this
    with ``raise_error=True``, which Keras 3.9 to 3.12 lack: theirs only stops at the epoch's
    end.)"""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(self.epoch + 1, batch)


class StopAtIteration(keras.callbacks.Callback):
    """End training after ``total`` iterations, inside the last epoch where ``total`` is not
    a whole number of epochs (the paper stops CIFAR at 64k iterations, not at the end of
    the 165th epoch of 390)."""

    def __init__(self, total, steps_per_epoch):
        super().__init__()
        self.total, self.steps_per_epoch, self.epoch = total, steps_per_epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        # (Counted here, not read from the optimizer: that would wait for the device.)
        if self.epoch * self.steps_per_epoch + batch + 1 >= self.total:
            self.model.stop_training = True


class Backup(keras.callbacks.Callback):
    """The resume state after every epoch (``rundir.BackupStore``), written atomically.

    Replaces Keras' ``BackupAndRestore``, which writes ``latest.weights.h5`` and its
    metadata in place: a kill during that write strands the run.
    """

    def __init__(self, store, identity, seconds_before):
        super().__init__()
        self.store, self.identity, self.seconds_before = store, identity, seconds_before
        self.started = time.monotonic()

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def train_seconds(self):
        return self.seconds_before + time.monotonic() - self.started

    def on_epoch_end(self, epoch, logs=None):
        self.store.save(self.model, epoch + 1, self.identity, self.train_seconds())
        files.fault_point("epoch.end")


class Checkpoints(keras.callbacks.Callback):
    """``last.keras`` every epoch, ``best.keras`` on the best test accuracy, and
    ``checkpoints.json`` saying which epoch each holds.

    Not Keras' ``ModelCheckpoint``: it saves in place (``model.save(filepath)``), so a
    kill during a save would leave a torn checkpoint. Non-chief workers save to a
    temporary folder (every worker takes part in a distributed save).
    """

    def __init__(self, model_dir, chief=True, record=None, owned=None):
        super().__init__()
        self.dir, self.chief, self.owned = model_dir, chief, owned
        self.record = dict(record or {})

    def _save(self, name):
        if self.chief:
            _own(self.owned, os.path.join(self.dir, name))
            with files.atomic_path(os.path.join(self.dir, name)) as tmp:
                self.model.save(tmp)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                self.model.save(os.path.join(tmp, name))

    def on_epoch_end(self, epoch, logs=None):
        acc = (logs or {}).get("val_accuracy")
        entry = {"epoch": epoch + 1, "val_accuracy": None if acc is None else float(acc)}
        self._save("last.keras")
        self.record["last"] = entry
        best = self.record.get("best", {}).get("val_accuracy")
        if acc is not None and (best is None or acc > best):
            self._save("best.keras")
            self.record["best"] = entry
        if self.chief:
            path = os.path.join(self.dir, rundir.CHECKPOINTS)
            _own(self.owned, path)
            files.write_json(path, self.record)


class EpochLog(keras.callbacks.Callback):
    """``log.csv``: a row per epoch, the whole file rewritten atomically at each epoch's end
    (Keras' ``CSVLogger`` appends in place: a kill mid-row left a torn line that the next
    row was glued to)."""

    def __init__(self, path, rows, owned=None):
        super().__init__()
        self.path, self.rows = path, list(rows)
        _own(owned, path)

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [row for row in self.rows if row["epoch"] < epoch] + [
            {"epoch": epoch, **{k: float(v) for k, v in sorted((logs or {}).items())}}]
        rundir.write_log(self.path, self.rows)


class RecordTensorBoard(keras.callbacks.Callback):
    """Record the event files this process's ``TensorBoard`` callback (the one before it)
    created, as soon as they exist: TensorFlow names them, so they cannot be recorded
    before they are written."""

    def __init__(self, folder, owned):
        super().__init__()
        self.folder, self.owned = folder, owned
        owned.add(*(os.path.join(folder, sub) for sub in ("train", "validation")), folder=True)

    def _record(self, *args):
        mine = f".{os.getpid()}."
        for sub in ("train", "validation"):
            path = os.path.join(self.folder, sub)
            if os.path.isdir(path):
                self.owned.add(*(os.path.join(path, n) for n in os.listdir(path)
                                 if n.startswith("events.out.tfevents.") and mine in n))

    on_train_begin = on_test_begin = on_epoch_end = on_train_end = _record


def _own(owned, *paths):
    """Record ``paths`` as written by this run, before they are (``owned``: the run's
    :class:`files.Record`, or ``None`` outside a run directory)."""
    if owned is not None:
        owned.add(*paths)


# -- the training entry point ----------------------------------------------------
def train(config, log=print):
    """Train (or resume) the run described by ``config`` (a ``TrainConfig``, or what
    ``rundir.prepare`` made of one); return its results dict."""
    checked = config if isinstance(config, rundir.Checked) else rundir.prepare(config)
    config, action, found = checked.config, checked.action, checked.found
    if action == rundir.Action.FINISHED:
        _report_finished(config, found.results, log)
        return found.results
    check_backend(config)
    # MultiWorkerMirroredStrategy must be configured before any TF op runs.
    strategy = make_strategy(config)
    n_replicas = replicas(strategy)
    if config.batch_size % n_replicas:
        raise ValueError(
            f"The global batch size {config.batch_size} is not divisible by the "
            f"{n_replicas} replicas; use a multiple of {n_replicas}."
        )
    if config.mixed_precision != "off":
        keras.mixed_precision.set_global_policy(f"mixed_{config.mixed_precision}")
    keras.utils.set_random_seed(config.seed)
    if config.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if config.deterministic and keras.backend.backend() == "torch":
        import torch

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' condition for it
        torch.use_deterministic_algorithms(True)

    from keras_preact.data import datasets as data_lib

    data = data_lib.make_data(
        config.dataset, config.batch_size, seed=config.seed, data_dir=config.data_dir,
        cifar_archive=config.cifar_archive, eval_size=config.eval_size,
        steps_per_epoch=config.steps_per_epoch, test_multiple=_local_devices(strategy),
    )
    schedule = schedule_for(config, data.steps_per_epoch)
    scope = strategy.scope if strategy is not None else contextlib.nullcontext
    # The resume state is keyed by the unrolled names: a run resumes in either form (scanned
    # or unrolled). One of keras_preact 0.1 is matched by position: that run keeps its form.
    recorded = None if config.overwrite else rundir.positional_form(config.model_dir)
    xla = _xla(config, strategy)
    scan = scan_choice(config, xla, recorded, eager=keras.backend.backend() == "torch" and not xla)
    with scope():
        model = _build_model(config, data, schedule, strategy, scan)
    if data.augmentation is not None:
        augment_in_step(model, data.augmentation, n_replicas)
        if isinstance(strategy, keras.distribution.DataParallel):
            strategy.auto_shard_dataset = False  # in memory: _fit feeds each process its share

    chief = rundir.is_chief()
    record = {**_config_record(config, data, schedule, n_replicas),
              "scan_units": "on" if scan else "off"}
    with _open_run(config, record, chief, log) as (action, checkpoints, owned):
        with scope():
            start_epoch, seconds, rows = _restore(model, config, action, chief, owned, log,
                                                  schedule.steps_per_epoch)
        _report_start(config, model, data, schedule, strategy, n_replicas, start_epoch, log)
        # Keras' JAX trainer places each batch by the current distribution (a process feeds
        # only its share): fit runs in its scope there.
        jax_scope = scope if keras.backend.backend() == "jax" else contextlib.nullcontext
        with jax_scope():
            results = _fit(model, config, data, schedule, chief, start_epoch, seconds,
                           checkpoints, owned, rows)
        results["replicas"] = n_replicas
        if config.strategy == "multi_worker":
            from keras_preact.layers import compat

            results["compat_fixes"] = sorted(compat.USED)
        path = _worker_path(config.model_dir, chief, rundir.RESULTS)
        _own(owned, path)
        files.write_json(path, results)
        if chief and _plots(config):
            from keras_preact.train import plotting

            path = os.path.join(config.model_dir, rundir.CURVES)
            _own(owned, path)
            plotting.plot_runs([config.model_dir], path)
    _report_end(config, results, chief, log)
    return results


def _build_model(config, data, schedule, strategy, scan=False):
    # The ImageNet nets are fully convolutional: evaluating on the paper's 320 crop
    # needs an input of free size (training still feeds 224 crops).
    input_shape = data.input_shape
    if config.eval_size not in (None, input_shape[0]):
        input_shape = (None, None, input_shape[-1])
    recipe = RECIPES[config.recipe]
    model = registry.get_model(
        config.arch, classes=data.classes, input_shape=input_shape,
        kernel_regularizer=None if recipe.decay_all else coupled_l2(config.weight_decay),
        classifier_activation=None, scan_units=scan, remat=scan and config.remat,
        **network_options(config),
    )
    model.compile(
        optimizer=make_optimizer(recipe, learning_rate(schedule), config.momentum,
                                 config.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=_xla(config, strategy),
        steps_per_execution=config.steps_per_execution,
    )
    # The optimizer's variables exist before a backup is loaded into them.
    model.optimizer.build(model.trainable_variables)
    return model


def augment_in_step(model, augmentation, n_replicas=1):
    """Run ``augmentation(images, counter)`` on each batch inside ``model``'s compiled
    training step, before Keras' own step; ``counter`` is the step number (times the
    replicas, plus this replica, under tf.distribute).

    Overriding ``train_step`` is Keras' way to change what ``fit`` does; it is done on
    the instance, so the model (and every file saved from it) stays the plain network.
    On JAX the step receives its variables as Keras' guide to a custom ``fit`` with JAX
    documents them: ``(trainable, non_trainable, optimizer, metrics)``; TensorFlow and torch
    pass only the data.
    """
    keras_step, optimizer = model.train_step, model.optimizer
    position = next(i for i, v in enumerate(optimizer.variables) if v is optimizer.iterations)

    def train_step(*args):
        *state, data = args  # JAX passes the step's variables (state, data); the others data
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if state:
            _, _, optimizer_variables, _ = state[0]  # as traced (JAX)
            counter = optimizer_variables[position]
        elif keras.backend.backend() == "tensorflow":
            counter = optimizer.iterations.value * n_replicas + _replica_id()
        else:  # torch: one device
            counter = optimizer.iterations.value
        data = keras.utils.pack_x_y_sample_weight(augmentation(images, counter), labels,
                                                  sample_weight)
        return keras_step(*state, data)

    model.train_step = train_step


def _replica_id():
    """This replica's index under a tf.distribute strategy (0 without one)."""
    import tensorflow as tf

    return tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)


def _xla(config, strategy):
    """Whether the training step is compiled with XLA (``jit_compile``)."""
    if config.jit_compile == "auto":
        return compiles_by_default(distributed=strategy is not None)
    return config.jit_compile == "true"


def _config_record(config, data, schedule, n_replicas):
    return {
        "format": rundir.RUN_FORMAT,
        "identity": config.identity(),
        "resolved": dataclasses.asdict(config),
        "total_iterations": schedule.total_iterations,
        "epochs": schedule.epochs,
        "steps_per_epoch": data.steps_per_epoch,
        "schedule": {"boundaries": list(schedule.boundaries), "values": list(schedule.values)},
        "replicas": n_replicas,
        "normalization": {"mean": list(data.mean), "std": list(data.std)},
        "input_shape": list(data.input_shape),
        "classes": data.classes,
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
    }


@contextlib.contextmanager
def _open_run(config, record, chief, log):
    """Create, lock and claim the run directory; yield (action, checkpoints record, this
    worker's record of what it writes)."""
    model_dir = files.ensure_directory(config.model_dir, "--model-dir")
    with rundir.lock(model_dir):
        action, _ = rundir.check(config, probe_lock=False)  # again, now that we hold it
        if action == rundir.Action.OVERWRITE:
            kept = rundir.remove_run(model_dir)
            log(f"--overwrite: removed the previous run in {model_dir}"
                + (f"; kept {files.describe_entries(model_dir, kept)}, which keras_preact "
                   "did not write" if kept else ""))
        files.remove_stale_temporaries(model_dir)
        owned = rundir.open_record(model_dir, action, log)
        if chief:
            path = os.path.join(model_dir, rundir.CONFIG)
            owned.add(path)
            files.write_json(path, record)
        checkpoints = {}
        path = os.path.join(model_dir, rundir.CHECKPOINTS)
        if action in (rundir.Action.RESUME, rundir.Action.FINISHED) and os.path.exists(path):
            try:
                checkpoints = files.read_json(path)
            except (ValueError, OSError) as e:
                aside = rundir.set_aside(path, owned)
                log(f"warning: {str(e).rstrip('.')}; set aside as {os.path.basename(aside)}. "
                    "best.keras will be replaced by the next epoch's checkpoint.")
        yield action, checkpoints, owned


def _restore(model, config, action, chief, owned, log, steps_per_epoch=None):
    """Load the newest intact resume state; return (epoch, training seconds so far, the
    log's rows of the epochs before it). (``steps_per_epoch``: the step count of a run
    resumed from the weights alone.)"""
    # (finished: by another process meanwhile)
    if action not in (rundir.Action.RESUME, rundir.Action.FINISHED):
        return 0, 0.0, []
    store = _backup_store(config, owned)
    workers = rundir.cluster_workers()
    # (The processes of a cluster resume from the same epoch: the newest all of them hold.)
    upto = (rundir.common_epoch(config.model_dir, sorted(workers), config.identity())
            if len(workers) > 1 else None)
    epoch, seconds = store.restore(model, config.identity(), log=log, upto=upto)
    if rundir.jax_process():  # (the same epoch, or the collectives would not match)
        from jax.experimental import multihost_utils

        epochs = sorted(set(np.ravel(multihost_utils.process_allgather(np.int32(epoch)))))
        if len(epochs) > 1:
            raise UserError(f"The processes restored different epochs ({epochs}): a backup "
                            "changed while they read it. Start them all again.")
    last = os.path.join(config.model_dir, "last.keras")
    # (Alone only: the workers of a cluster must resume from the same epoch.)
    if not epoch and chief and len(workers) == 1 and os.path.exists(last):
        try:
            held = files.read_json(os.path.join(config.model_dir, rundir.CHECKPOINTS))["last"]
            aside = ""
            try:
                model.load_weights(last)
            except ValueError:  # saved in the other form: its weights, matched by name
                from keras_preact.models.resnet import load_weights

                load_weights(model, last)
                # (the step drives the schedule and the augmentation: where the epoch ends)
                model.optimizer.iterations.assign(int(held["epoch"]) * steps_per_epoch)
                aside = " (saved in the other form: its weights; the momentum starts at zero)"
            log(f"warning: no intact backup; resuming from last.keras (epoch {held['epoch']})"
                f"{aside}.")
            epoch = int(held["epoch"])
        except Exception as e:  # noqa: BLE001 - not usable: start over, saying so
            log(f"warning: last.keras cannot resume the run ({type(e).__name__}).")
    if not epoch and store.generations():
        log("warning: no usable resume state was found; starting the run over from epoch 0.")
    rows = rundir.resume_log(_worker_path(config.model_dir, chief, rundir.LOG), epoch, log, owned)
    return epoch, seconds, rows


def _backup_store(config, owned=None):
    return rundir.BackupStore(os.path.join(config.model_dir, rundir.BACKUP, rundir.worker_id()),
                              owned)


def _fit(model, config, data, schedule, chief, start_epoch, seconds, checkpoints, owned=None,
         rows=()):
    backup = Backup(_backup_store(config, owned), config.identity(), seconds)
    callbacks = [
        StopOnNaN(),
        StopAtIteration(schedule.total_iterations, schedule.steps_per_epoch),
        EpochLog(_worker_path(config.model_dir, chief, rundir.LOG), rows, owned),
        Checkpoints(config.model_dir, chief=chief, record=checkpoints, owned=owned),
    ]
    if installed("tensorflow"):
        folder = os.path.join(config.model_dir, rundir.TENSORBOARD, rundir.worker_id())
        callbacks.append(keras.callbacks.TensorBoard(folder))
        if owned is not None:
            callbacks.append(RecordTensorBoard(folder, owned))
    # The backup is the epoch's commit point: what the epoch writes is written before it.
    callbacks.append(backup)
    try:
        # (A run killed after its last backup has no epoch left: Keras' JAX trainer would
        # still draw a batch from the empty stream to trace the model.)
        if start_epoch < schedule.epochs:
            stream = data.train_stream(schedule.epochs, start_epoch)
            if data.augmentation is not None and keras.backend.backend() == "tensorflow":
                from keras_preact.data.datasets import tf_train_stream

                stream = tf_train_stream(data, schedule.epochs, start_epoch, config.batch_size)
            process = (rundir.jax_process() if config.strategy == "multi_worker"
                       and keras.backend.backend() == "jax" else None)
            if process and data.augmentation is not None:
                # Each JAX process feeds its share of the global batch (Keras shards only a
                # tf.data stream; train turned that off); the test batches go whole to each:
                # the same metrics.
                from keras_preact.data.datasets import process_share

                stream = process_share(stream, *process)
            model.fit(
                stream, epochs=schedule.epochs,
                initial_epoch=start_epoch, steps_per_epoch=schedule.steps_per_epoch,
                validation_data=data.test, callbacks=callbacks, shuffle=False,
                verbose=verbosity(config, sys.stdout.isatty()),
            )
    except TrainingDiverged as e:
        raise TrainingDiverged(_diverged_message(config, *e.args)) from None
    loss, accuracy = model.evaluate(data.test, verbose=0)
    return {
        "arch": config.arch, "dataset": config.dataset, "placement": config.placement,
        "shortcut": config.shortcut, "projection": config.projection, "recipe": config.recipe,
        "test_error": round(100.0 * (1.0 - accuracy), 3), "test_loss": float(loss),
        "paper_error": paper_error(config), "recipe_error": recipe_error(config),
        "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "epochs": schedule.epochs, "resumed_from_epoch": start_epoch,
        "wall_time_s": round(backup.train_seconds(), 1),
        "weights_sha256": weights_digest(model.weights),
        "trainable_weights_sha256": weights_digest(model.trainable_weights),
    }


def _diverged_message(config, epoch, batch):
    last = os.path.join(config.model_dir, "last.keras")
    try:
        held = files.read_json(os.path.join(config.model_dir, rundir.CHECKPOINTS))["last"]["epoch"]
    except (OSError, ValueError, KeyError):
        held = None
    kept = (f"{last} holds epoch {held}, the last finished one" if held and os.path.exists(last)
            else "no epoch had finished, so there is no checkpoint")
    warmup = " or with the warm-up on" if RECIPES[config.recipe].warmup else ""
    return (f"The loss became NaN or infinite in epoch {epoch}, batch {batch}. Training "
            f"stopped without saving the diverged state; {kept}. Train again with a lower --lr "
            f"(this run: {config.lr:g}){warmup}, in a new --model-dir or with --overwrite.")


def benchmark_backup(arch, repeats=7, log=print):
    """Time the epoch-end resume-state write of ``arch`` (weights and SGD momentum):
    ``BackupStore.save`` against what Keras' ``BackupAndRestore`` does (``save_weights``
    over one file, in place), alternating, in this process; print and return the figures."""
    import statistics

    model = registry.get_model(arch)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    times = {"in place": [], "atomic": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = rundir.BackupStore(os.path.join(tmp, "atomic"))
        inplace = os.path.join(tmp, "latest.weights.h5")
        for epoch in range(1, repeats + 1):
            for mode, write in (("in place", lambda: model.save_weights(inplace)),
                                ("atomic", lambda: store.save(model, epoch, {}, 0.0))):
                start = time.perf_counter()
                write()
                times[mode].append(time.perf_counter() - start)
        size = os.path.getsize(inplace) / 1e6
    ms = {mode: 1e3 * statistics.median(t) for mode, t in times.items()}
    log(f"{arch}: resume state {size:.1f} MB; median of {repeats} epoch-end writes: Keras "
        f"BackupAndRestore-style in place {ms['in place']:.0f} ms, keras_preact atomic "
        f"{ms['atomic']:.0f} ms (ratio {ms['atomic'] / ms['in place']:.2f})")
    return {"megabytes": size, "in_place_ms": ms["in place"], "atomic_ms": ms["atomic"]}


def weights_digest(weights):
    """SHA-256 of a list of variables, in order (equal weights, equal digest)."""
    digest = hashlib.sha256()
    for w in weights:
        digest.update(keras.ops.convert_to_numpy(w.value).tobytes())
    return digest.hexdigest()


# -- what the run says ------------------------------------------------------------------
def _report_start(config, model, data, schedule, strategy, n_replicas, start_epoch, log):
    from keras_preact.vocab.catalog import format_shortcut

    params = sum(math.prod(w.shape) for w in model.trainable_weights)
    rates = [f"{schedule.values[0]:g}" + (" (warm-up)" if schedule.warmup_iterations else "")]
    rates += [f"{v:g} from iteration {b:,}" for b, v in zip(schedule.boundaries, schedule.values[1:])]
    kind = type(strategy).__name__ if strategy is not None else "none"
    log(f"arch       {config.arch}: {config.placement}, shortcut "
        f"{format_shortcut(config.shortcut)}, projection {config.projection}; "
        f"{params:,} trainable parameters")
    log(f"data       {config.dataset}: {data.train_examples:,} training and "
        f"{data.test_examples:,} test images, {data.classes} classes, input "
        f"{'x'.join(map(str, data.input_shape))}"
        + (f", evaluated at {config.eval_size}x{config.eval_size}"
           if config.eval_size not in (None, data.input_shape[0]) else ""))
    recipe = RECIPES[config.recipe]
    log(f"schedule   batch {config.batch_size}, {schedule.describe(data.steps_per_epoch)}; "
        f"learning rate {', '.join(rates)}; recipe {recipe.name}: "
        + ("Nesterov " if recipe.nesterov else "") + f"momentum {config.momentum:g}"
        + (" (Torch's buffer)" if recipe.torch_sgd else "")
        + f", weight decay {config.weight_decay:g} on "
        + ("every parameter" if recipe.decay_all else "the weights"))
    log(f"devices    strategy {kind} ({n_replicas} replica{'s' if n_replicas > 1 else ''}), "
        f"precision {'float32' if config.mixed_precision == 'off' else 'mixed_' + config.mixed_precision}, "
        f"backend {keras.backend.backend()}, "
        + ("identical units scanned" + (" with remat" if config.remat else "")
           if any(isinstance(layer, ScannedUnits) for layer in model.layers)
           else "units unrolled"))
    log(f"run        {os.path.abspath(config.model_dir)}: "
        + (f"resuming from epoch {start_epoch} of {schedule.epochs}" if start_epoch
           else f"starting epoch 1 of {schedule.epochs}"))


def _plots(config):
    return config.plot and installed("matplotlib")


def _error_line(results):
    paper = results.get("paper_error")
    if paper == registry.FAIL:
        paper = f"fail, i.e. above {registry.FAIL_ABOVE:g}%,"
    elif paper is not None:
        paper = f"{paper:.2f}%"
    published = results.get("recipe_error")
    return (f"test error {results['test_error']:.2f}%"
            + (f" (paper: {paper} for {results['arch']} {results['placement']} on "
               f"{results['dataset']})" if paper is not None
               else " (the paper reports no figure for this configuration)")
            + (f"; {results['recipe']} reports {published['median']:.2f}% median, "
               f"{published['mean']:.2f} ± {published['std']:.2f}% mean ± std at this batch"
               if published else ""))


def _report_end(config, results, chief, log):
    log(_error_line(results))
    if not chief:
        return
    d = config.model_dir
    optional = [("curves.png", "matplotlib", config.plot), ("tensorboard/", "tensorflow", True)]
    written = [what for what, module, wanted in optional if wanted and installed(module)]
    missing = [f"{what} ({module} is not installed)" for what, module, wanted in optional
               if wanted and not installed(module)]
    log(f"outputs    {d}: {', '.join(['last.keras', 'best.keras', 'results.json', 'log.csv'] + written)}"
        + (f"; not written: {', '.join(missing)}" if missing else ""))
    log(f"next       {shlex.join(['keras-preact', 'plot', d, '--out', 'curves.png'])}")
    log(f"           {shlex.join(['keras-preact', 'export', '--model', d])}")


def _report_finished(config, results, log):
    log(f"{config.model_dir} holds a finished run ({results.get('epochs')} epochs); nothing "
        "to do. Use --overwrite to train it again, or another --model-dir.")
    log(_error_line(results))
