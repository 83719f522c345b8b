"""Every file keras_preact writes goes through here: atomic writes, ownership, locks.

* :func:`atomic_path` / :func:`atomic_file` / :func:`write_json`: a file appears
  whole or not at all. It is written to a hidden temporary sibling, flushed and
  fsync'ed, renamed over the target, and the folder is fsync'ed. Files get the
  permissions of any other file (``0666 & ~umask``), not ``mkstemp``'s 0600.
* :func:`atomic_directory`: a folder assembled in a hidden sibling and renamed into
  place by one writer at a time; an existing target is replaced only when it is ours.
* :class:`Record` / :func:`export_record` / :func:`remove_recorded` / :func:`unrecorded`:
  ownership by record. Every folder the tools write lists, at any depth, what they
  wrote there (a run directory in its records, an export in its manifest), so that
  ``--overwrite`` removes exactly that and keeps, and names, everything else.
* :class:`Lock`: one writer per run directory or export target; a second one is
  refused with the process that holds it.
* :func:`fault_point`: deterministic fault injection for the tests
  (``KERAS_PREACT_FAULT=name[@count]`` kills the process at a named point).

Only the standard library: the model core never needs it; every tool that writes does.
"""

import contextlib
import enum
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import time
import uuid

FAULT_ENV = "KERAS_PREACT_FAULT"
_TMP_TAG = ".tmp-"
# The markers of what keras_preact writes: a run directory's config.json carries
# "format": RUN_FORMAT; an export's manifest.json carries "manifest_version".
RUN_CONFIG, RUN_FORMAT = "config.json", "keras_preact.run/1"
RUN_RESULTS, RUN_CHECKPOINTS = "results.json", "checkpoints.json"  # (a finished run; which
# epoch each checkpoint holds)
EXPORT_MANIFEST = "manifest.json"


class RefusedError(RuntimeError):
    """A write that would lose something we did not write, or that another process holds.
    (Like ``UserError``, the scripts print it as one line and exit 2.)"""


class Busy(RefusedError):
    """Another process holds the lock."""


# -- fault injection ------------------------------------------------------------------
_fault_counts = {}


def fault_point(name):
    """SIGKILL this process at the named point when ``KERAS_PREACT_FAULT`` asks for it.

    ``KERAS_PREACT_FAULT=backup.weights`` kills at the first pass through that point,
    ``backup.weights@3`` at the third; ``epoch.end@2:TERM`` sends SIGTERM instead (or
    ``INT``: SIGINT). Tests use it instead of timing a kill.
    """
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    wanted, _, sent = wanted.partition(":")
    point, _, count = wanted.partition("@")
    if point != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] == int(count or 1):
        os.kill(os.getpid(), getattr(signal, f"SIG{sent or 'KILL'}"))


# -- atomic files ---------------------------------------------------------------------
def _tmp_name(path):
    directory, base = os.path.split(os.path.abspath(path))
    # Host and pid identify the writer; a killed writer's leftovers are removed by
    # remove_stale_temporaries. The target's own suffix is kept (Keras checks it).
    stem, dot, ext = base.partition(".")
    host = socket.gethostname().replace("-", "_")
    return os.path.join(directory, f".{stem}{_TMP_TAG}{host}-{os.getpid()}-"
                                   f"{uuid.uuid4().hex[:8]}{dot}{ext}")


def fsync_path(path):
    """fsync a file, or a folder's entry table (so a rename survives a power cut)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems cannot fsync a folder
        if e.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_tree(path):
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            for name in names:
                fsync_path(os.path.join(root, name))
            fsync_path(root)
    else:
        fsync_path(path)


def remove_path(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


class DiskFull(OSError):
    """A write ran out of space (named, where the writer's own error names no file)."""


@contextlib.contextmanager
def _naming_a_full_disk(path):
    """Re-raise a writer's out-of-space error (Python's, h5py's, TensorFlow's) as
    :class:`DiskFull` naming ``path``."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as e:
        if getattr(e, "errno", None) != errno.ENOSPC and "No space left on device" not in str(e):
            raise
        raise DiskFull(
            f"No space left on the device to write {os.path.abspath(path)}: free some space "
            "and run the command again; nothing written before is lost (a training run "
            "resumes from its last finished epoch: leave out --overwrite).") from None


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path for a writer that wants a file name (``model.save``,
    ``savefig``, h5py); on success it replaces ``path`` atomically, on failure it
    is removed and ``path`` is untouched."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with _naming_a_full_disk(path):
            yield tmp
            _fsync_tree(tmp)
        os.replace(tmp, path)
        fsync_path(os.path.dirname(os.path.abspath(path)))
    finally:
        if os.path.lexists(tmp):
            remove_path(tmp)


@contextlib.contextmanager
def atomic_file(path, mode="w"):
    """Yield an open file whose content replaces ``path`` atomically when the block ends."""
    with atomic_path(path) as tmp:
        with open(tmp, mode.replace("w", "x")) as f:
            yield f
            f.flush()


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path``, atomically."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path, what="file"):
    """The JSON object in ``path``; a damaged file raises ``ValueError`` naming it."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged: not valid JSON ({e}).") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} is damaged: expected a JSON object, found "
                         f"{type(value).__name__}.")
    return value


_TMP_NAME = re.compile(r"^\.(?P<stem>.*)\.tmp-(?P<host>[^-]+)-(?P<pid>\d+)-[0-9a-f]{8}(\..*)?$")


def remove_stale_temporaries(directory, stem=None):
    """Remove the temporaries (of ``stem`` only, if given) that writers on this host
    left in ``directory`` when they were killed."""
    host = socket.gethostname().replace("-", "_")
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        match = _TMP_NAME.match(name)
        if (match and match["host"] == host and stem in (None, match["stem"])
                and not _alive(int(match["pid"]))):
            remove_path(os.path.join(directory, name))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- what is ours ---------------------------------------------------------------------
def run_config(directory):
    """The ``config.json`` of the run keras_preact wrote in ``directory`` (this version's,
    marked ``"format": RUN_FORMAT``, or an older one's, which holds ``identity`` and
    ``resolved``); ``ValueError`` saying why there is none (``FileNotFoundError`` when
    there is no file)."""
    path = os.path.join(directory, RUN_CONFIG)
    config = read_json(path)
    if config.get("format") != RUN_FORMAT and not {"identity", "resolved"} <= set(config):
        raise ValueError(f"{path} was not written by keras_preact (no \"format\": "
                         f"\"{RUN_FORMAT}\")")
    if not isinstance(config.get("identity"), dict):
        raise ValueError(f"{path} is damaged: it names no run (no \"identity\" object)")
    if "normalisation" in config:  # the spelling of runs written by keras_preact 0.1
        config.setdefault("normalization", config.pop("normalisation"))
    return config


class RunState(str, enum.Enum):
    """Where the run that wrote a checkpoint stands (``run_checkpoint``)."""

    FINISHED = "finished"  # it wrote its results
    TRAINING = "training"  # a process holds its lock
    INTERRUPTED = "interrupted"  # neither

    __str__ = str.__str__  # (its value, in f-strings too)


def run_checkpoint(directory, name):
    """What the checkpoint ``directory/name`` (``last.keras``, ``best.keras``) of a run
    holds: ``{"file", "epoch", "epochs", "run"}``, ``run`` a :class:`RunState`. Reads only."""
    try:
        epoch = int(read_json(os.path.join(directory, RUN_CHECKPOINTS))[name.partition(".")[0]]
                    ["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        epoch = None
    try:
        epochs = read_json(os.path.join(directory, RUN_CONFIG)).get("epochs")
    except (OSError, ValueError):
        epochs = None
    if os.path.exists(os.path.join(directory, RUN_RESULTS)):
        run = RunState.FINISHED
    elif any(is_locked(os.path.join(directory, n)) for n in os.listdir(directory)
             if n.startswith(".lock-")):
        run = RunState.TRAINING
    else:
        run = RunState.INTERRUPTED
    return {"file": name, "epoch": epoch, "epochs": epochs, "run": run}


class Record:
    """What keras_preact wrote under the folder ``root``: relative paths of files, and of
    folders it created (ending in ``/``), kept in the JSON file ``root/name``.

    ``--overwrite`` removes exactly what the records list, at any depth, and keeps the
    rest. A path is recorded *before* it is written, so that a kill never leaves a file
    of ours unrecorded (a recorded path never written is harmless). ``complete`` is
    false when the record began while the folder already held files of ours (a run of
    an older version, resumed) or replaced a damaged record: then what it does not list
    may be ours or not, and removal is refused.
    """

    FORMAT = "keras_preact.record/1"

    def __init__(self, root, name, entries=(), complete=True):
        self.root, self.path = root, os.path.join(root, name)
        self.entries, self.complete = set(entries), complete

    @classmethod
    def read(cls, root, name):
        """The record in ``root/name``; ``None`` when there is none; ``ValueError`` naming
        it when it is damaged."""
        path = os.path.join(root, name)
        if not os.path.lexists(path):
            return None
        value = read_json(path)
        entries = value.get("entries")
        if value.get("format") != cls.FORMAT or not isinstance(entries, list) or not all(
                isinstance(e, str) and _relative(e) for e in entries):
            raise ValueError(f"{path} is damaged: not a keras_preact record of its files.")
        return cls(root, name, entries, value.get("complete") is True)

    def relative(self, path):
        """``path`` (a path as any other: absolute, or relative to the working folder) as
        recorded: relative to the root."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root))
        if not _relative(rel):
            raise ValueError(f"{path} is not inside {self.root}")
        return rel.replace(os.sep, "/")

    def add(self, *paths, folder=False):
        """Record ``paths`` (files, or with ``folder`` folders) and the folders above them."""
        new = set()
        for path in paths:
            rel = self.relative(path)
            parts = rel.split("/")
            new |= {"/".join(parts[:i]) + "/" for i in range(1, len(parts))}
            new.add(rel + "/" if folder else rel)
        if not new <= self.entries:
            self.entries |= new
            self.save()

    def claim(self, *paths, what="folder"):
        """Record ``paths`` before they are written, refusing (``RefusedError``, writing
        nothing) when one exists that this record does not list: it is not ours to replace."""
        theirs = [p for p in paths if os.path.lexists(p) and self.relative(p) not in self.entries]
        if theirs:
            raise RefusedError(
                f"{describe_entries(self.root, [self.relative(p) for p in theirs])} in {what} "
                f"{self.root!r} {'was' if len(theirs) == 1 else 'were'} not written by "
                "keras_preact: move them away or choose another folder.")
        self.add(*paths)

    def discard(self, *paths):
        """Forget ``paths`` (files of ours, removed)."""
        gone = {self.relative(p) for p in paths} & self.entries
        if gone:
            self.entries -= gone
            self.save()

    def save(self):
        write_json(self.path, {"format": self.FORMAT, "complete": self.complete,
                               "entries": sorted(self.entries)})


def _relative(rel):
    parts = rel.rstrip("/").split("/")
    return rel and not os.path.isabs(rel) and ".." not in parts and "." not in parts


def unrecorded(root, entries, transient=lambda name: False):
    """What ``root`` holds, at any depth, that ``entries`` (a record's paths) do not
    list: relative paths, a folder none of whose content is recorded as one ``dir/``.
    Temporaries of our writers and ``transient(name)`` entries of the root are skipped."""
    out = []

    def walk(rel):
        folder = os.path.join(root, rel)
        for name in sorted(os.listdir(folder)):
            path = f"{rel}{name}"
            if _TMP_NAME.match(name) or (not rel and transient(name)):
                continue
            if os.path.isdir(os.path.join(root, path)) and not os.path.islink(
                    os.path.join(root, path)):
                if path + "/" in entries:
                    walk(path + "/")
                else:
                    out.append(path + "/")
            elif path not in entries:
                out.append(path)

    walk("")
    return out


def remove_recorded(root, entries, last=(), transient=lambda name: False):
    """Remove what ``entries`` list under ``root`` (files first, the names in ``last``
    after them, then the recorded folders that are left empty, deepest first), and the
    temporaries killed writers left in those folders; return what stayed (:func:`unrecorded`)."""
    paths = sorted(e for e in entries if not e.endswith("/"))
    for rel in [p for p in paths if p not in last] + [p for p in last if p in entries]:
        path = os.path.join(root, rel)
        if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)):
            os.remove(path)
    for rel in sorted((e for e in entries if e.endswith("/")), key=lambda e: -e.count("/")):
        path = os.path.join(root, rel)
        if os.path.isdir(path):
            remove_stale_temporaries(path)
            with contextlib.suppress(OSError):  # (not empty: it holds what we did not write)
                os.rmdir(path)
    return unrecorded(root, entries, transient)


def tree_entries(folder):
    """Every file and folder under ``folder``, as a record lists them."""
    out = []
    for path, dirs, names in os.walk(folder):
        rel = os.path.relpath(path, folder).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        out += [prefix + d + "/" for d in dirs] + [prefix + n for n in names]
    return sorted(out)


def export_record(folder):
    """The paths the keras_preact export in ``folder`` wrote (its manifest's record);
    ``RefusedError`` saying what would be lost when it is not one, or keeps no record."""
    try:
        manifest = read_json(os.path.join(folder, EXPORT_MANIFEST))
    except FileNotFoundError:
        manifest = None
    except (ValueError, OSError) as e:
        raise RefusedError(f"{str(e).rstrip('.')}, so it cannot tell its files from yours: "
                           f"{describe_entries(folder, sorted(os.listdir(folder)))} would "
                           "be lost") from None
    if manifest is None or "manifest_version" not in manifest:
        raise RefusedError(f"it holds no keras_preact {EXPORT_MANIFEST}, so "
                           f"{describe_entries(folder, sorted(os.listdir(folder)))} would be lost")
    recorded = manifest.get("files")
    if not isinstance(recorded, list) or not all(isinstance(e, str) for e in recorded):
        raise RefusedError(
            "it holds an export of an older keras_preact, which kept no record of its files, "
            f"so {describe_entries(folder, sorted(os.listdir(folder)))} would be lost (delete "
            "it yourself if nothing in it is yours)")
    return set(recorded) | {EXPORT_MANIFEST}


def sha256(path):
    """The SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def foreign_entries(directory, ours):
    """Entries of ``directory`` that are not ours: ``ours(name)`` says which are."""
    return sorted(n for n in os.listdir(directory) if not ours(n) and not _TMP_NAME.match(n))


def describe_entries(directory, names, limit=6):
    """``'notes.txt', 'sub/' and 3 more`` for a message."""
    shown = [n + ("/" if not n.endswith("/") and os.path.isdir(os.path.join(directory, n))
                  else "") for n in names]
    text = ", ".join(repr(n) for n in shown[:limit])
    return text + (f" and {len(shown) - limit} more" if len(shown) > limit else "")


def ensure_directory_possible(path, what):
    """Raise ``RefusedError`` when ``path`` cannot be (or become) a writable folder; reads only."""
    path = os.path.abspath(path)
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        where = "is" if probe == path else f"lies under {probe!r}, which is"
        raise RefusedError(f"{what} {path!r} {where} a file, not a folder: choose a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RefusedError(f"Cannot write to {what} {path!r}: permission denied on {probe!r}. "
                           "Choose a folder you can write to.")
    _check_path_length(path, probe, what)
    return path


# How far below its folder the deepest file a tool writes lies, beyond the host name: a
# worker's TensorBoard event file (tensorboard/worker12/validation/events.out.tfevents.
# <time>.<host>.<pid>.<n>.v2) and an export's temporary folder (.<name>.tmp-<host>-<pid>-
# <tag>/saved_model/variables/variables.data-00000-of-00001) measure 90-110 characters.
PATH_HEADROOM = 160


def _check_path_length(path, probe, what):
    """Refuse a folder whose files would pass the system's limits on a path or a name
    (``ENAMETOOLONG`` deep inside a writer, e.g. TensorFlow's, would strand the work)."""
    host = len(socket.gethostname())
    try:  # (-1 or an error: the system sets no limit, or cannot say)
        path_max, name_max = (os.pathconf(probe, f"PC_{n}_MAX") for n in ("PATH", "NAME"))
    except (OSError, ValueError):
        return
    path_max, name_max = (limit if limit > 0 else 1 << 30 for limit in (path_max, name_max))
    base = os.path.basename(path)
    shown = path if len(path) <= 80 else f"{path[:40]}...{path[-30:]}"
    if len(path.encode()) + PATH_HEADROOM + host >= path_max:
        raise RefusedError(
            f"{what} {shown!r} is {len(path):,} characters long; what keras_preact writes in "
            f"it lies up to {PATH_HEADROOM + host} characters deeper, past this system's limit "
            f"of {path_max:,} for a path: choose a shorter path.")
    longest = max(path.split(os.sep), key=len)
    if len(longest.encode()) > name_max or len(base.encode()) + 40 + host > name_max:
        raise RefusedError(
            f"{what} {shown!r} has a folder name of {len(longest.encode())} bytes; names of up "
            f"to {name_max - 40 - host} fit this system's limit of {name_max} with what "
            "keras_preact adds to them: choose a shorter name.")


def ensure_directory(path, what):
    """Create ``path`` (and parents) or raise ``RefusedError`` saying why it cannot be."""
    path = ensure_directory_possible(path, what)
    try:
        os.makedirs(path, exist_ok=True)
        _check_writable(path)
    except PermissionError:
        raise RefusedError(f"Cannot write to {what} {path!r}: permission denied. Choose a "
                           "folder you can write to.") from None
    except OSError as e:
        raise RefusedError(f"Cannot write to {what} {path!r}: {e.strerror}.") from None
    return path


def _check_writable(path):
    probe = _tmp_name(os.path.join(path, "probe"))
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    os.remove(probe)


@contextlib.contextmanager
def atomic_directory(target, overwrite=False, record_of=None, what="folder"):
    """Yield a temporary folder that replaces ``target`` when the block ends.

    An existing non-empty ``target`` is replaced only with ``overwrite`` and only when
    ``record_of(target)`` returns what keras_preact wrote there (the relative paths);
    otherwise it raises ``RefusedError`` saying what would be lost, and nothing is
    touched. What ``target`` holds besides the record is kept: hard-linked into the new
    folder before the swap, so that at every moment the user's files are in a visible
    folder. One process writes a target at a time (a :class:`Lock` beside it,
    ``.<name>.lock``). On failure the temporary folder is removed and ``target`` is
    untouched; the old folder is removed only after the new one is in place. The
    caller reads what was kept from ``yielded.kept`` (a list) after the block.
    """
    target = os.path.abspath(os.fspath(target))
    parent, base = os.path.split(target)
    ensure_directory(parent, f"the folder of {what}")
    with Lock(os.path.join(parent, f".{base}.lock"), f"{what} {target!r}"):
        _recover_displaced(target, record_of)
        recorded = check_replaceable(target, overwrite, record_of, what)  # now that we hold it
        remove_stale_temporaries(parent, stem=base.partition(".")[0])
        with _replacing(target, recorded) as tmp:
            yield tmp


class _Folder(str):
    """The temporary folder's path, and (after the block) what the old folder kept."""

    kept = ()


@contextlib.contextmanager
def _replacing(target, recorded):
    parent = os.path.dirname(target)
    tmp = _Folder(_tmp_name(target))
    os.mkdir(tmp)
    try:
        with _naming_a_full_disk(target):
            yield tmp
            if recorded is not None:
                tmp.kept = unrecorded(target, recorded)
                _link_into(target, tmp, tmp.kept)
            fault_point("directory.before-rename")
            _fsync_tree(tmp)
        # The old folder is displaced (not a temporary: if the swap is cut short, the next
        # writer puts it back), and SIGINT/SIGTERM wait until both renames are done.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            if os.path.lexists(target):
                old = _displaced_name(target)
                os.rename(target, old)
                fault_point("directory.swap")
                os.rename(tmp, target)
                # (Checked again: a file the user put in the old folder after its files were
                # linked into the new one stays, named.)
                _remove_displaced(old, target, recorded or set())
            else:
                os.rename(tmp, target)
            fsync_path(parent)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    finally:
        if os.path.lexists(tmp):
            remove_path(tmp)


def _displaced_name(target):
    parent, base = os.path.split(target)
    return os.path.join(parent, f".{base}.displaced-{socket.gethostname().replace('-', '_')}-"
                                f"{os.getpid()}")


def _recover_displaced(target, record_of=None):
    """Put back the folder a killed swap displaced (``target`` missing), or remove it once
    the swap is complete: only when everything in it that its record does not list is in
    ``target`` too (the same file, hard-linked); otherwise refuse, naming it."""
    parent, base = os.path.split(target)
    host = socket.gethostname().replace("-", "_")
    for name in os.listdir(parent):
        match = re.fullmatch(rf"\.{re.escape(base)}\.displaced-([^-]+)-(\d+)", name)
        if not match or match[1] != host or _alive(int(match[2])):
            continue
        displaced = os.path.join(parent, name)
        if not os.path.lexists(target):
            os.rename(displaced, target)
            continue
        try:
            recorded = record_of(displaced) if record_of else set()
        except RefusedError:
            recorded = set()
        _remove_displaced(displaced, target, recorded)


def _remove_displaced(displaced, target, recorded):
    """Remove the old folder a swap displaced, only when everything in it that is not
    ``recorded`` is in ``target`` too (the same file, hard-linked); else refuse, naming it."""
    theirs = [rel for rel in tree_entries(displaced) if not rel.endswith("/")
              and rel not in recorded and not _same_file(displaced, target, rel)]
    if theirs:
        raise RefusedError(
            f"A replacement of {target!r} left its old folder at {displaced!r}, which holds "
            f"{describe_entries(displaced, theirs)} that {os.path.basename(target)!r} does "
            f"not: move them where they belong, then delete "
            f"{os.path.basename(displaced)!r}.")
    remove_path(displaced)


def _same_file(a, b, rel):
    try:
        return os.path.samefile(os.path.join(a, rel), os.path.join(b, rel))
    except OSError:
        return False


def _link_into(old, new, kept):
    """Hard-link the ``kept`` entries of ``old`` (files, links, whole folders) into ``new``
    at the same places; ``RefusedError`` when one would take the place of a new file."""
    for rel in kept:
        source, dest = os.path.join(old, rel), os.path.join(new, rel)
        if os.path.lexists(dest.rstrip("/")):
            raise RefusedError(f"{source.rstrip('/')!r}, which keras_preact did not write, is "
                               "where the new export writes: move it away and export again.")
        os.makedirs(os.path.dirname(dest.rstrip("/")), exist_ok=True)
        try:
            if rel.endswith("/"):
                shutil.copytree(source, dest, symlinks=True, copy_function=os.link)
            elif os.path.islink(source):
                os.symlink(os.readlink(source), dest)
            else:
                os.link(source, dest)
        except (OSError, shutil.Error) as e:
            raise RefusedError(f"Cannot keep {source.rstrip('/')!r}, which keras_preact did not "
                               f"write, in the new folder ({getattr(e, 'strerror', None) or e}): "
                               "move it away and try again.") from None


def check_replaceable(target, overwrite, record_of, what):
    """Raise ``RefusedError`` unless ``target`` is absent, empty, or ours to replace; return
    the record of what it holds of ours (``None`` when absent or empty)."""
    if os.path.lexists(target) and not os.path.isdir(target):
        raise RefusedError(f"{target!r} is a file, not a {what}: choose another path.")
    ensure_directory_possible(target, what)
    if not os.path.lexists(target) or not os.listdir(target):
        return None
    if not overwrite:
        raise RefusedError(f"{target!r} already exists; pass --overwrite to replace it.")
    if record_of is None:
        raise RefusedError(f"Refusing to overwrite {target!r}: it was not written by "
                           "keras_preact.")
    try:
        return record_of(target)
    except RefusedError as e:
        raise RefusedError(
            f"Refusing to overwrite {target!r}: {str(e).rstrip('.')}. --overwrite replaces only "
            f"a {what} that keras_preact wrote; move those files away or choose another "
            "path.") from None


# -- locks ----------------------------------------------------------------------------
def is_locked(path):
    """Whether a process holds the :class:`Lock` at ``path`` now (reads only)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class Lock:
    """An exclusive, non-blocking ``flock`` on ``path``, released when the process ends.

    The lock file records the holder (pid, host, start time) so that a refused
    writer can be told who holds it; it is removed on release.
    """

    def __init__(self, path, what):
        self.path, self.what, self._fd = path, what, None

    def acquire(self):
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise Busy(f"{self.what} is in use by {holder}: wait for it to finish or "
                           "stop it; two writers would corrupt it.") from None
            # The previous holder may have removed the file between our open and flock.
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            held = os.fstat(fd)
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()} (since {started})"
                 .encode())
        self._fd = fd
        return self

    def release(self):
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
