"""Every file keras_preact writes goes through here: atomic writes, ownership, locks.

* :func:`atomic_path` / :func:`atomic_file` / :func:`write_json`: a file appears
  whole or not at all. It is written to a hidden temporary sibling, flushed and
  fsync'ed, renamed over the target, and the folder is fsync'ed. Files get the
  permissions of any other file (``0666 & ~umask``), not ``mkstemp``'s 0600.
* :func:`atomic_directory`: a folder assembled in a hidden sibling and renamed into
  place by one writer at a time; an existing target is replaced only when it is ours.
* :func:`run_config` / :func:`is_export` / :func:`foreign_entries`: the markers of a
  run directory and of an export, and what a folder holds that we did not write, so
  that ``--overwrite`` removes only our own artifacts and names anything else.
* :class:`Lock`: one writer per run directory or export target; a second one is
  refused with the process that holds it.
* :func:`fault_point`: deterministic fault injection for the tests
  (``KERAS_PREACT_FAULT=name[@count]`` kills the process at a named point).

Only the standard library: the model core never needs it; every tool that writes does.
"""

import contextlib
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

from keras_preact._validation import UserError

FAULT_ENV = "KERAS_PREACT_FAULT"
_TMP_TAG = ".tmp-"
# The markers of what keras_preact writes: a run directory's config.json carries
# "format": RUN_FORMAT; an export's manifest.json carries "manifest_version".
RUN_CONFIG, RUN_FORMAT = "config.json", "keras_preact.run/1"
EXPORT_MANIFEST = "manifest.json"


class RefusedError(UserError, RuntimeError):
    """A write that would lose something we did not write, or that another process holds."""


class Busy(RefusedError):
    """Another process holds the lock."""


# -- fault injection ------------------------------------------------------------------
_fault_counts = {}


def fault_point(name):
    """SIGKILL this process at the named point when ``KERAS_PREACT_FAULT`` asks for it.

    ``KERAS_PREACT_FAULT=backup.weights`` kills at the first pass through that point,
    ``backup.weights@3`` at the third. Tests use it instead of timing a kill.
    """
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition("@")
    if point != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


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


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path for a writer that wants a file name (``model.save``,
    ``savefig``, h5py); on success it replaces ``path`` atomically, on failure it
    is removed and ``path`` is untouched."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _tmp_name(path)
    try:
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
    return config


def is_export(folder):
    """``None`` if ``folder`` is an export keras_preact wrote (a manifest listing everything
    in it), else the reason it is not."""
    try:
        manifest = read_json(os.path.join(folder, EXPORT_MANIFEST))
    except FileNotFoundError:
        manifest = None
    except (ValueError, OSError) as e:
        return str(e).rstrip(".")
    if manifest is None or "manifest_version" not in manifest:
        return (f"it holds no keras_preact {EXPORT_MANIFEST}, so "
                f"{describe_entries(folder, sorted(os.listdir(folder)))} would be lost")
    listed = {EXPORT_MANIFEST} | {a["path"].split("/")[0] for a in manifest.get("artifacts", [])}
    foreign = foreign_entries(folder, lambda n: n in listed)
    if foreign:
        return (f"besides the export it holds {describe_entries(folder, foreign)}, "
                "which would be lost")
    return None


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
    shown = [n + ("/" if os.path.isdir(os.path.join(directory, n)) else "") for n in names]
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
    return path


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
def atomic_directory(target, overwrite=False, is_ours=None, what="folder"):
    """Yield a temporary folder that replaces ``target`` when the block ends.

    An existing non-empty ``target`` is replaced only with ``overwrite`` and only when
    ``is_ours(target)`` returns ``None``; otherwise it returns the reason (the
    entries that would be lost) and nothing is touched. One process writes a target
    at a time (a :class:`Lock` beside it, ``.<name>.lock``). On failure the temporary
    folder is removed and ``target`` is untouched; the old folder is removed only
    after the new one is in place.
    """
    target = os.path.abspath(os.fspath(target))
    parent, base = os.path.split(target)
    ensure_directory(parent, f"the folder of {what}")
    with Lock(os.path.join(parent, f".{base}.lock"), f"{what} {target!r}"):
        check_replaceable(target, overwrite, is_ours, what)  # again, now that we hold it
        remove_stale_temporaries(parent, stem=base.partition(".")[0])
        with _replacing(target) as tmp:
            yield tmp


@contextlib.contextmanager
def _replacing(target):
    parent = os.path.dirname(target)
    tmp = _tmp_name(target)
    os.mkdir(tmp)
    try:
        yield tmp
        fault_point("directory.before-rename")
        _fsync_tree(tmp)
        if os.path.lexists(target):
            old = _tmp_name(target)
            os.rename(target, old)
            os.rename(tmp, target)
            remove_path(old)
        else:
            os.rename(tmp, target)
        fsync_path(parent)
    finally:
        if os.path.lexists(tmp):
            remove_path(tmp)


def check_replaceable(target, overwrite, is_ours, what):
    """Raise ``RefusedError`` unless ``target`` is absent, empty, or ours to replace."""
    if not os.path.lexists(target):
        return
    if not os.path.isdir(target):
        raise RefusedError(f"{target!r} is a file, not a {what}: choose another path.")
    if not os.listdir(target):
        return
    if not overwrite:
        raise RefusedError(f"{target!r} already exists; pass --overwrite to replace it.")
    reason = is_ours(target) if is_ours else "it was not written by keras_preact"
    if reason:
        raise RefusedError(
            f"Refusing to overwrite {target!r}: {reason}. --overwrite replaces only a "
            f"{what} that keras_preact wrote; move those files away or choose another path.")


# -- locks ----------------------------------------------------------------------------
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
