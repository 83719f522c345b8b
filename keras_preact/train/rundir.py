"""The run directory: what a training run writes, how it is recognised, resumed and
protected. Plain Python: the model is only passed in (its resume state is written and read by
``keras_preact.train.state``).

Layout (``--model-dir``)::

    config.json        the run's identity and resolved settings; the marker that the
                       folder is a keras_preact run ("format": RUN_FORMAT)
    backup/<worker>/   the resume state of each worker, two generations:
                       epoch-00005.weights.h5 + epoch-00005.json (written last)
    last.keras, best.keras, checkpoints.json   checkpoints, and which epoch each holds
    log.csv, tensorboard/, results.json, curves.png, workers/<id>/ (non-chief logs)
    .lock-<worker>     held while a process writes the run
    .owned-<worker>.json   the record of every path that worker wrote (files.Record)

Every file is written through :mod:`keras_preact.io.files` (atomically), and recorded
before it is written. ``--overwrite`` removes exactly what the records list, at any
depth, and keeps (and names) everything else; a run without a complete record (of an
older version) is refused, naming what would be lost, as is a folder that holds no run.
"""

import contextlib
import csv
import dataclasses
import enum
import io
import json
import os
import re
import time

from keras_preact.io import files

RUN_FORMAT, CONFIG = files.RUN_FORMAT, files.RUN_CONFIG
BACKUP_FORMAT = "keras_preact.backup/1"
RESULTS, CHECKPOINTS = files.RUN_RESULTS, files.RUN_CHECKPOINTS
LOG, CURVES, BACKUP = "log.csv", "curves.png", "backup"
TENSORBOARD, WORKERS = "tensorboard", "workers"  # (one folder per worker inside)
OWN_ENTRIES = (CONFIG, RESULTS, CHECKPOINTS, LOG, CURVES, BACKUP, TENSORBOARD, WORKERS,
               "last.keras", "best.keras")
RECORD_PREFIX = ".owned-"
_GENERATION = re.compile(r"^epoch-(\d+)\.json$")
KEEP_GENERATIONS = 2
KEYS_UNROLLED = "unrolled"  # a backup's keys: the unrolled network's names (train.state)


def _tf_config():
    return json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")


# Keras' variables for a cluster of JAX processes (keras.distribution.initialize reads them).
JAX_CLUSTER = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
               "KERAS_DISTRIBUTION_PROCESS_ID")


def jax_process():
    """``(process id, process count)`` of a JAX cluster (Keras' variables), or None."""
    try:
        index, count = (int(os.environ[v]) for v in JAX_CLUSTER[2:0:-1])
    except (KeyError, ValueError):
        return None
    return (index, count) if count > 1 else None


def check_jax_cluster():
    """Raise ValueError unless Keras' variables describe a JAX cluster this process is in."""
    missing = [v for v in JAX_CLUSTER if not os.environ.get(v)]
    if missing:
        raise ValueError(f"--strategy multi_worker on JAX joins the processes that Keras' "
                         f"variables describe: set {', '.join(missing)} (the coordinator's "
                         "host:port, the number of processes, this one's id from 0).")
    try:
        index, count = (int(os.environ[v]) for v in JAX_CLUSTER[2:0:-1])
    except ValueError:
        index = count = -1
    if not 0 <= index < count:
        raise ValueError(f"KERAS_DISTRIBUTION_PROCESS_ID must be in 0 .. "
                         f"KERAS_DISTRIBUTION_NUM_PROCESSES - 1; they are "
                         f"{os.environ[JAX_CLUSTER[2]]!r} and {os.environ[JAX_CLUSTER[1]]!r}.")


def is_chief():
    """Whether this process is the chief of its cluster (``TF_CONFIG``, or process 0 of a JAX
    cluster), or alone."""
    tf_config = _tf_config()
    task = tf_config.get("task", {})
    if not task and jax_process():
        return jax_process()[0] == 0
    return task.get("type") in (None, "chief") or (
        task.get("type") == "worker" and task.get("index") == 0
        and "chief" not in tf_config.get("cluster", {}))


def worker_id():
    """``chief0`` alone; ``worker1`` ... in a cluster: whose backup and lock are whose."""
    task = _tf_config().get("task", {})
    if not task and jax_process():
        index = jax_process()[0]
        return "chief0" if index == 0 else f"worker{index}"
    return f"{task.get('type', 'chief')}{task.get('index', 0)}"


def common_epoch(model_dir, workers, identity):
    """The newest epoch whose backup is intact in every worker's store: the one a cluster
    resumes from (a process killed at an epoch's end may not have written that epoch's)."""
    common = None
    for worker in workers:
        epochs = BackupStore(os.path.join(model_dir, BACKUP, worker)).intact_epochs(identity)
        common = epochs if common is None else common & epochs
    return max(common or {0})


def lock(model_dir):
    """The lock this process holds while it writes the run in ``model_dir``."""
    return files.Lock(os.path.join(model_dir, f".lock-{worker_id()}"),
                      f"run directory {os.path.abspath(model_dir)!r}")


def is_own_entry(name):
    return name in OWN_ENTRIES or _transient(name)


def _transient(name):
    """A run's locks and records: not content, never removed by name."""
    return name.startswith(".lock-") or name.startswith(RECORD_PREFIX)


def record_name(worker=None):
    return f"{RECORD_PREFIX}{worker or worker_id()}.json"


def cluster_workers():
    """The ids (``chief0``, ``worker1`` ...) of the processes of this run's cluster."""
    if not _tf_config().get("task") and jax_process():
        return {"chief0"} | {f"worker{i}" for i in range(1, jax_process()[1])}
    cluster = _tf_config().get("cluster") or {"chief": [None]}
    return {f"{kind}{i}" for kind, tasks in cluster.items() for i in range(len(tasks))}


def read_records(model_dir):
    """``(records, problem)``: every worker's record of what it wrote in ``model_dir``, and
    why they do not cover the run (``None`` when complete)."""
    records, problem = [], None
    for name in sorted(os.listdir(model_dir)):
        if re.fullmatch(rf"{re.escape(RECORD_PREFIX)}[a-z]+\d+\.json", name):
            try:
                record = files.Record.read(model_dir, name)
            except (ValueError, OSError) as e:
                problem = str(e).rstrip(".")
                continue
            records.append(record)
            if not record.complete:
                problem = (f"its record {name} began while the folder already held files of "
                           "the run (of an older keras_preact, or after a damaged record)")
    if not records and problem is None:
        problem = "it keeps no record of its files (written by an older keras_preact)"
    return records, problem


def open_record(model_dir, action, log=print):
    """This worker's record, for a run about to be written: a new one for a new run,
    the one it had for a resumed run (a damaged one is set aside, saying so)."""
    name = record_name()
    fresh = files.Record(model_dir, name)
    if action in (Action.NEW, Action.OVERWRITE):
        return fresh
    try:
        record = files.Record.read(model_dir, name)
    except (ValueError, OSError) as e:
        aside = set_aside(os.path.join(model_dir, name))
        log(f"warning: {str(e).rstrip('.')}; set aside as {os.path.basename(aside)}. "
            "--overwrite will refuse this folder from now on, as it can no longer tell what "
            "keras_preact wrote.")
        fresh.complete = False
        return fresh
    if record is None and _wrote_before(model_dir):
        log(f"note: this run was started by an older keras_preact, which kept no record of "
            f"its files: --overwrite will refuse {model_dir!r} (delete it yourself when done).")
        fresh.complete = False
    return record or fresh


def _wrote_before(model_dir):
    """Whether this worker's files are in ``model_dir`` already."""
    worker = worker_id()
    mine = [os.path.join(folder, worker) for folder in (BACKUP, TENSORBOARD, WORKERS)]
    if is_chief():
        mine += [CONFIG, LOG, CHECKPOINTS, "last.keras"]
    return any(os.path.lexists(os.path.join(model_dir, p)) for p in mine)


def set_aside(path, record=None):
    """Rename a damaged file of ours to a new, visible name beside it (kept for the user to
    look at; recorded in ``record``, as ours, when given); return the new name."""
    folder, base = os.path.split(path)
    stem, ext = os.path.splitext(base.lstrip("."))
    aside = os.path.join(folder, f"{stem}.damaged-{time.strftime('%Y%m%d-%H%M%S')}{ext}")
    if record is not None:
        record.add(aside)
    os.replace(path, aside)
    return aside


def differences(a, b):
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


class Action(str, enum.Enum):
    """What opening a run directory does (``check``)."""

    NEW = "new"  # start the run (the folder is new, or holds nothing of ours)
    RESUME = "resume"  # continue it from its resume state
    FINISHED = "finished"  # nothing: it has its results
    OVERWRITE = "overwrite"  # remove what the run wrote, then start it

    __str__ = str.__str__  # (its value, in f-strings too)


@dataclasses.dataclass
class Found:
    """What a run directory holds before a run opens it."""

    path: str
    exists: bool = False
    foreign: list = dataclasses.field(default_factory=list)  # entries we did not write
    config: dict = None  # config.json, if it is ours and readable
    config_error: str = None  # why config.json is not usable
    legacy: bool = False  # config.json of an older keras_preact, which cannot be resumed
    backup_identity: dict = None  # the identity recorded with the newest readable backup
    results: dict = None
    records: list = dataclasses.field(default_factory=list)  # what each worker wrote
    record_problem: str = None  # why the records do not cover the run

    @property
    def identity(self):
        return (self.config or {}).get("identity") or self.backup_identity

    @property
    def ours(self):
        return self.config is not None or self.backup_identity is not None

    def recorded(self):
        return set().union(*(r.entries for r in self.records))


def inspect(model_dir):
    """Read what ``model_dir`` holds, without writing anything."""
    found = Found(os.path.abspath(model_dir))
    if not os.path.isdir(model_dir):
        return found
    found.exists = True
    found.foreign = files.foreign_entries(model_dir, is_own_entry)
    found.records, found.record_problem = read_records(model_dir)
    if os.path.exists(os.path.join(model_dir, CONFIG)):
        try:
            config = files.run_config(model_dir)
            found.legacy = config.get("format") != RUN_FORMAT
            found.config = None if found.legacy else config
        except (ValueError, OSError) as e:
            found.config_error = str(e).rstrip(".")
    backup_root = os.path.join(model_dir, BACKUP)
    if os.path.isdir(backup_root):
        for worker in sorted(os.listdir(backup_root)):
            for meta in BackupStore(os.path.join(backup_root, worker)).generations():
                if meta.get("identity"):
                    found.backup_identity = meta["identity"]
                    break
            if found.backup_identity:
                break
    results_path = os.path.join(model_dir, RESULTS)
    if found.config is not None and os.path.exists(results_path):
        try:
            found.results = files.read_json(results_path)
        except (ValueError, OSError):
            found.results = None
    return found


@dataclasses.dataclass(frozen=True)
class Checked:
    """A run's configuration, resolved, and what opening its folder will do (``check``)."""

    config: object
    action: Action
    found: object


def prepare(config):
    """Resolve ``config`` and check its run directory, once per run: every check that
    needs no backend. ``training.train`` takes the result as it is."""
    from keras_preact.train.config import resolve_config

    resolved = resolve_config(config)
    return Checked(resolved, *check(resolved))


def check(config, probe_lock=True):
    """Decide what opening ``config.model_dir`` will do: ``(Action, Found)``; raise
    ``RefusedError`` (saying what to do) when the folder cannot be used, or
    (``probe_lock``) when another process is writing it. Writes nothing but the probe of
    the lock."""
    found = inspect(config.model_dir)
    if found.exists and probe_lock:
        with lock(config.model_dir):
            pass
    if not found.exists:
        files.ensure_directory_possible(config.model_dir, "--model-dir")
        return Action.NEW, found
    identity = config.identity()
    if found.legacy and not found.ours:
        if config.overwrite:
            return _overwrite(found)
        raise files.RefusedError(
            f"{found.path!r} holds a run of an older keras_preact, which this version cannot "
            "resume: move it away or delete it, or choose another --model-dir.")
    if not found.ours:
        # (Locks, records and the temporaries of a writer, and the folders of a cluster's other
        # workers, which may start before the chief writes config.json, are not content.)
        entries = files.foreign_entries(
            found.path, lambda n: _transient(n) or _workers_folder(found.path, n))
        if not entries:
            return Action.NEW, found
        if CONFIG in entries and found.config_error is None and not found.legacy:
            return check(config, probe_lock)  # (the chief wrote it since: read it again)
        if config.overwrite and found.records and found.record_problem is None:
            return _overwrite(found)  # (a removal cut short: the records outlive the marker)
        if found.config_error and not found.foreign:
            raise files.RefusedError(
                f"{found.config_error}, and no backup confirms which run this is. If it is "
                f"a keras_preact run, restore {CONFIG} from a copy; otherwise move it away.")
        raise files.RefusedError(
            f"--model-dir {found.path!r} holds no keras_preact run "
            f"({found.config_error or f'no {CONFIG}'}) but is not empty: "
            f"{files.describe_entries(found.path, entries)}"
            + (" would be lost with --overwrite" if config.overwrite else "")
            + ". Choose a new or empty folder.")
    if config.overwrite:
        return _overwrite(found)
    if found.config is not None and found.backup_identity is not None \
            and found.config["identity"] != found.backup_identity:
        differ = differences(found.config["identity"], found.backup_identity)
        raise files.RefusedError(
            f"{found.path!r} is inconsistent: its {CONFIG} and its backup describe different "
            f"runs (differ in: {', '.join(differ)}). Pass --overwrite to discard the run, or "
            "choose another --model-dir.")
    if found.identity != identity:
        raise files.RefusedError(
            f"{found.path!r} holds a run with a different configuration (differs in: "
            f"{', '.join(differences(found.identity, identity))}). Use another --model-dir, or "
            "--overwrite to discard that run.")
    if found.results is not None:
        return Action.FINISHED, found
    return Action.RESUME, found


def _overwrite(found):
    """``--overwrite`` needs a record of everything keras_preact wrote in the folder."""
    if found.record_problem:
        lost = files.unrecorded(found.path, found.recorded(), _transient)
        if lost:
            raise files.RefusedError(
                f"--overwrite cannot tell the run in {found.path!r} from your files, as "
                f"{found.record_problem}: {files.describe_entries(found.path, lost)} would be "
                "lost. Move out what is yours and delete the folder, or choose another "
                "--model-dir.")
    return Action.OVERWRITE, found


def _workers_folder(model_dir, name):
    """Whether ``name`` is one of a run's folders that hold one folder per worker
    (``backup/``, ``tensorboard/``, ``workers/``) and nothing but other workers' folders."""
    path = os.path.join(model_dir, name)
    if name not in (BACKUP, TENSORBOARD, WORKERS) or not os.path.isdir(path):
        return False
    return all(re.fullmatch(r"(chief|worker)\d+", worker) and worker != worker_id()
               and os.path.isdir(os.path.join(path, worker)) for worker in os.listdir(path))


def remove_run(model_dir):
    """Delete exactly what this worker's record lists in ``model_dir`` (the chief also
    what the records of workers no longer in the cluster list): the marker, then the
    records, last, so that a kill midway leaves a run that ``--overwrite`` finishes
    removing. Return what stayed, at any depth, that no record lists."""
    records, _ = read_records(model_dir)
    workers = cluster_workers()
    mine = [r for r in records if os.path.basename(r.path) == record_name() or (
        is_chief() and os.path.basename(r.path)[len(RECORD_PREFIX):-5] not in workers)]
    removed = set().union(*(r.entries for r in mine))
    files.remove_recorded(model_dir, removed, last=(CONFIG,), transient=_transient)
    for record in mine:
        with contextlib.suppress(FileNotFoundError):
            os.remove(record.path)
    others = set().union(*(r.entries for r in records if r not in mine))
    return files.unrecorded(model_dir, removed | others, _transient)


# -- the resume state -------------------------------------------------------------
class BackupStore:
    """A worker's resume state: the weights and optimizer state after each epoch.

    Each generation is ``epoch-NNNNN.weights.h5`` plus ``epoch-NNNNN.json``, the
    metadata written last (the commit point) with the run's identity, the file's
    SHA-256 and the training time so far. The previous generation is removed only
    once a new one is complete; a damaged one is detected on restore and skipped.

    The weights file holds ``keras_preact.train.state.dump``: every weight and optimizer
    variable keyed by the unrolled network's names, so a run resumes in either form
    (scanned or unrolled) whichever it was saved in. A generation of keras_preact 0.1
    (``model.save_weights``, matched by position; its metadata has no ``"keys"``) loads
    into the form it was written from.
    """

    def __init__(self, directory, record=None):
        self.dir, self.record = directory, record

    def _paths(self, epoch):
        stem = os.path.join(self.dir, f"epoch-{epoch:05d}")
        return stem + ".weights.h5", stem + ".json"

    def generations(self):
        """Readable metadata of the committed generations, newest first."""
        out = []
        if not os.path.isdir(self.dir):
            return out
        for name in os.listdir(self.dir):
            match = _GENERATION.match(name)
            if match:
                try:
                    meta = files.read_json(os.path.join(self.dir, name))
                except (ValueError, OSError):
                    meta = {"format": None}
                meta["_epoch"] = int(match.group(1))
                out.append(meta)
        return sorted(out, key=lambda m: -m["_epoch"])

    def save(self, model, epoch, identity, train_seconds):
        weights, meta = self._paths(epoch)
        if self.record is not None:  # (before the folders too)
            self.record.add(weights, meta)
        os.makedirs(self.dir, exist_ok=True)
        with files.atomic_path(weights) as tmp:
            _write_state(tmp, model)
            files.fault_point("backup.weights")
        files.fault_point("backup.metadata")
        files.write_json(meta, {
            "format": BACKUP_FORMAT, "epoch": epoch, "identity": identity,
            "weights": os.path.basename(weights), "keys": KEYS_UNROLLED,
            "sha256": files.sha256(weights), "bytes": os.path.getsize(weights),
            "train_seconds": round(train_seconds, 3),
        })
        self.prune()

    def prune(self):
        """Keep the newest ``KEEP_GENERATIONS`` committed generations; drop the rest and
        any weights whose metadata was never written."""
        # By record where there is a complete one (else by name: a run of an older version).
        by_record = self.record is not None and self.record.complete
        ours = (lambda path: self.record.relative(path) in self.record.entries) if by_record \
            else (lambda path: True)
        generations = [m for m in self.generations()
                       if ours(os.path.join(self.dir, f"epoch-{m['_epoch']:05d}.json"))]
        keep = {m["_epoch"] for m in generations[:KEEP_GENERATIONS]}
        for name in os.listdir(self.dir):
            match = re.match(r"^epoch-(\d+)\.(json|weights\.h5)$", name)
            path = os.path.join(self.dir, name)
            if match and int(match.group(1)) not in keep and ours(path):
                os.remove(path)
                if self.record is not None:
                    self.record.discard(path)
        files.remove_stale_temporaries(self.dir)

    def intact_epochs(self, identity):
        """The epochs of the generations that would load."""
        return {meta["_epoch"] for meta in self.generations() if self._check(meta, identity) is None}

    def restore(self, model, identity, log=print, upto=None):
        """Load the newest intact generation (of epoch ``upto`` at most) into ``model``;
        return ``(epoch, seconds)``, ``(0, 0.0)`` when there is none. Damaged generations
        are reported and skipped."""
        files.remove_stale_temporaries(self.dir)
        for meta in self.generations():
            epoch = meta["_epoch"]
            if upto is not None and epoch > upto:
                continue
            problem = self._check(meta, identity)
            if problem is None:
                path = os.path.join(self.dir, meta["weights"])
                try:
                    if meta.get("keys") == KEYS_UNROLLED:
                        _read_state(path, model)
                    else:  # (0.1: by position)
                        model.load_weights(path)
                    return epoch, float(meta.get("train_seconds", 0.0))
                except Exception as e:  # noqa: BLE001 - any failure means: not usable
                    problem = f"it cannot be loaded ({type(e).__name__}: {str(e)[:120]})"
            log(f"warning: the backup of epoch {epoch} in {self.dir} is damaged ({problem}); "
                "trying an earlier state.")
        return 0, 0.0

    def _check(self, meta, identity):
        if meta.get("format") != BACKUP_FORMAT:
            return "its metadata is not readable"
        if meta.get("identity") != identity:
            raise files.RefusedError(
                f"The backup in {self.dir} belongs to a run with a different configuration "
                f"(differs in: {', '.join(differences(meta.get('identity') or {}, identity))}). "
                "Use another --model-dir, or --overwrite to discard that run.")
        path = os.path.join(self.dir, str(meta.get("weights")))
        if not os.path.isfile(path):
            return "its weights file is missing"
        if os.path.getsize(path) != meta.get("bytes") or files.sha256(path) != meta.get("sha256"):
            return "its weights file is truncated or altered"
        return None


def _write_state(path, model):
    """``state.dump(model)`` as an HDF5 file, one dataset per key."""
    import h5py

    from keras_preact.train import state

    with h5py.File(path, "w") as f:
        for key, value in state.dump(model).items():
            f.create_dataset(key, data=value)


def _read_state(path, model):
    import h5py

    from keras_preact.train import state

    values = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda key, item: values.__setitem__(key, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    state.load(model, values)


def positional_form(model_dir):
    """``scan_units`` (``"on"`` or ``"off"``) that a run must be built with to load its
    resume state, where a backup of any worker is of keras_preact 0.1 (matched by position,
    it loads only into the form it was saved from: the form its config.json records, and
    unrolled for a run from before scanning); ``None`` where every backup is keyed by name
    and either form loads it."""
    root = os.path.join(model_dir, BACKUP)
    workers = [os.path.join(root, n) for n in sorted(os.listdir(root))] \
        if os.path.isdir(root) else []
    if not any(meta.get("format") == BACKUP_FORMAT and meta.get("keys") != KEYS_UNROLLED
               for worker in workers if os.path.isdir(worker)
               for meta in BackupStore(worker).generations()):
        return None
    try:
        recorded = files.read_json(os.path.join(model_dir, CONFIG)).get("scan_units")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return recorded if recorded in ("on", "off") else "off"


# -- the epoch log ---------------------------------------------------------------------
def read_log(path):
    """``(rows, problem)``: the rows of ``log.csv`` (one per epoch, in order, values as
    floats; a resumed run whose log was damaged has gaps) up to the first one that is
    damaged, and what is wrong with it (``None`` when the whole file is intact)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError:
        return [], "it is not text"
    lines = text.split("\n")
    if lines[-1]:
        return _parse_log(lines[:-1], "its last line is cut off")
    return _parse_log(lines[:-1], None)


def _parse_log(lines, problem):
    if not lines:
        return [], problem or "it is empty"
    header = next(csv.reader([lines[0]]))
    if not header or header[0] != "epoch" or len(set(header)) != len(header):
        return [], "its header is not an epoch log's"
    rows = []
    for number, values in enumerate(csv.reader(lines[1:]), start=2):
        try:  # (an empty value: a metric that epoch did not log)
            row = {k: float(v) for k, v in zip(header, values, strict=True) if v != ""}
            if not 0 <= row["epoch"] < 1e9:
                raise ValueError
        except (ValueError, KeyError):
            return rows, f"line {number} is not {len(header)} numbers"
        previous = rows[-1]["epoch"] if rows else -1
        if row["epoch"] != int(row["epoch"]) or row["epoch"] <= previous:
            return rows, f"line {number} holds epoch {values[0]}, after epoch {previous}"
        rows.append({**row, "epoch": int(row["epoch"])})
    return rows, problem


def write_log(path, rows):
    """``log.csv``, whole and atomically: ``epoch`` then the metrics in name order (as
    Keras' CSVLogger writes them)."""
    names = sorted({k for row in rows for k in row} - {"epoch"})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["epoch", *names], lineterminator="\n",
                            restval="")
    writer.writeheader()
    writer.writerows(rows)
    with files.atomic_file(path) as f:
        f.write(out.getvalue())


def resume_log(path, epochs, log=print, record=None):
    """The intact rows of the first ``epochs`` epochs of ``log.csv``, for a run resumed
    there; a damaged file is set aside (saying so) and the log rebuilt from them."""
    if not os.path.exists(path):
        return []
    rows, problem = read_log(path)
    if problem is not None:
        aside = set_aside(path, record)
        log(f"warning: {path} is damaged ({problem}); set aside as {os.path.basename(aside)}; "
            f"the log goes on from its {len(rows)} intact row{'s' * (len(rows) != 1)}.")
    kept = [row for row in rows if row["epoch"] < epochs]  # (the epochs after are redone)
    if problem is not None or len(kept) < len(rows):
        write_log(path, kept)
    return kept
