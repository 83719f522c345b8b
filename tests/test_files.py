"""keras_preact.files: atomic writes, what is ours, one writer at a time, fault injection."""

import os
import pathlib
import subprocess

import pytest

from keras_preact import files

from conftest import ROOT, python


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "state.json"
    files.write_json(str(path), {"epoch": 1})
    assert files.read_json(str(path)) == {"epoch": 1}
    with pytest.raises(RuntimeError, match="disk full"):
        with files.atomic_file(str(path)) as f:
            f.write('{"epoch": ')
            raise RuntimeError("disk full")
    assert files.read_json(str(path)) == {"epoch": 1}  # the old state, untouched
    assert os.listdir(tmp_path) == ["state.json"]  # and no temporary left behind
    # Permissions are those of any file the user writes, not mkstemp's 0600.
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def test_atomic_path_for_writers_that_want_a_name(tmp_path):
    target = tmp_path / "model.weights.h5"
    with files.atomic_path(str(target)) as tmp:
        assert tmp.endswith(".weights.h5") and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as f:
            f.write(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.weights.h5"]


def test_damaged_json_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("")
    with pytest.raises(ValueError, match=f"{path} is damaged: not valid JSON \\(Expecting value"):
        files.read_json(str(path))
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object, found list"):
        files.read_json(str(path))


def _dead_pid():
    with python("-c", "pass", wait=False) as proc:
        proc.wait()
    return proc.pid


def test_only_dead_writers_temporaries_are_removed(tmp_path):
    import socket

    host = socket.gethostname().replace("-", "_")
    dead = f".epoch-00003.tmp-{host}-{_dead_pid()}-0123abcd.weights.h5"
    alive = f".epoch-00004.tmp-{host}-{os.getpid()}-0123abcd.weights.h5"
    other_host = f".epoch-00005.tmp-elsewhere-{_dead_pid()}-0123abcd.weights.h5"
    lookalike = ".notes.tmp-mine"  # not our pattern
    for name in (dead, alive, other_host, lookalike, "user.txt"):
        (tmp_path / name).write_text("x")
    files.remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted([alive, other_host, lookalike, "user.txt"])


def test_atomic_directory_replaces_only_what_is_ours(tmp_path):
    target = tmp_path / "export"
    with files.atomic_directory(str(target)) as tmp:
        (tmp_path / tmp / "a.bin").write_bytes(b"1")
    assert os.listdir(target) == ["a.bin"]
    assert os.stat(target).st_mode & 0o777 == 0o777 & ~_umask()
    with pytest.raises(files.RefusedError, match="already exists; pass --overwrite"):
        with files.atomic_directory(str(target)):
            pass

    def refuse(path):
        raise files.RefusedError("not mine")

    with pytest.raises(files.RefusedError, match="Refusing to overwrite .*: not mine"):
        with files.atomic_directory(str(target), overwrite=True, record_of=refuse):
            pass
    (target / "user.txt").write_text("kept")
    with files.atomic_directory(str(target), overwrite=True, record_of=lambda p: {"a.bin"}) as tmp:
        (tmp_path / tmp / "b.bin").write_bytes(b"2")
    assert tmp.kept == ["user.txt"] and (target / "user.txt").read_text() == "kept"
    assert sorted(os.listdir(target)) == ["b.bin", "user.txt"]
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_a_record_removes_exactly_what_it_lists(tmp_path, monkeypatch):
    """At any depth: recorded files go, recorded folders go when left empty, the rest stays
    and is named; a damaged record is refused, naming it."""
    record = files.Record(str(tmp_path), ".record.json")
    monkeypatch.chdir(tmp_path / "..")  # (paths are paths: absolute, or relative to the working folder)
    record.add(os.path.join(tmp_path.name, "a.txt"), str(tmp_path / "sub" / "deep" / "b.bin"),
               str(tmp_path / "sub" / "c.bin"))
    record.add(str(tmp_path / "empty"), folder=True)
    assert record.entries == {"a.txt", "sub/", "sub/deep/", "sub/deep/b.bin", "sub/c.bin", "empty/"}
    for rel in ("a.txt", "sub/deep/b.bin", "sub/c.bin", "sub/deep/mine.txt", "mine/x.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / "empty").mkdir()
    again = files.Record.read(str(tmp_path), ".record.json")
    assert again.entries == record.entries and again.complete
    transient = lambda name: name == ".record.json"  # noqa: E731
    assert files.unrecorded(str(tmp_path), again.entries, transient) == ["mine/", "sub/deep/mine.txt"]
    kept = files.remove_recorded(str(tmp_path), again.entries, transient=transient)
    assert kept == ["mine/", "sub/deep/mine.txt"]
    assert sorted(files.tree_entries(str(tmp_path))) == [
        ".record.json", "mine/", "mine/x.txt", "sub/", "sub/deep/", "sub/deep/mine.txt"]
    with pytest.raises(ValueError, match="outside|not inside"):
        record.add(str(tmp_path / ".." / "escape.txt"))
    (tmp_path / ".record.json").write_text('{"format": "keras_preact.record/1", "entries": ["../x"]}')
    with pytest.raises(ValueError, match=r"\.record\.json is damaged"):
        files.Record.read(str(tmp_path), ".record.json")


def test_directory_checks_say_what_is_wrong(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(files.RefusedError, match="is a file, not a folder"):
        files.ensure_directory(str(tmp_path / "file"), "--model-dir")
    with pytest.raises(files.RefusedError, match=f"lies under '{tmp_path / 'file'}', which is a file"):
        files.ensure_directory_possible(str(tmp_path / "file" / "sub"), "--model-dir")
    assert files.ensure_directory(str(tmp_path / "a" / "b"), "x") == str(tmp_path / "a" / "b")


HOLDER = """
import os, sys
from keras_preact import files
lock = files.Lock({path!r}, "the thing").acquire()
print("locked", flush=True)
sys.stdin.readline()
os.kill(os.getpid(), 9) if sys.argv[1:] == ["die"] else lock.release()
"""


@pytest.mark.parametrize("ending", ["release", "die"])
def test_a_second_writer_is_refused_until_the_first_is_gone(tmp_path, ending):
    path = str(tmp_path / ".lock")
    with python("-c", HOLDER.format(root=ROOT, path=path), *(["die"] if ending == "die" else []),
                wait=False, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as holder:
        assert holder.stdout.readline() == "locked\n"  # the holder has it: no sleeping, no race
        with pytest.raises(files.Busy, match=f"the thing is in use by process {holder.pid} on "):
            files.Lock(path, "the thing").acquire()
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
    with files.Lock(path, "the thing"):  # released, or freed by the kernel with its holder
        assert os.path.exists(path)
    assert not os.path.exists(path)


def test_fault_points_count_their_passes(monkeypatch):
    killed = []
    monkeypatch.setattr(files.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setattr(files, "_fault_counts", {})
    monkeypatch.setenv(files.FAULT_ENV, "backup.weights@2")
    files.fault_point("backup.weights")
    files.fault_point("epoch.end")
    assert killed == []
    files.fault_point("backup.weights")
    assert killed == [(os.getpid(), 9)]


def test_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path):
    """A writer's out-of-space error that names no file (as h5py's and TensorFlow's do)
    becomes one that names the target and says the command can be run again."""
    import errno

    target = tmp_path / "last.keras"
    target.write_text("the previous checkpoint")
    with pytest.raises(files.DiskFull, match=f"No space left on the device to write {target}: "
                       "free some space and run the command again; nothing written before is lost"):
        with files.atomic_path(str(target)) as tmp:
            pathlib.Path(tmp).write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(files.DiskFull, match="to write .*export"):
        with files.atomic_directory(str(tmp_path / "export")):
            raise RuntimeError("Can't write data (errno = 28, error message = 'No space left "
                               "on device')")
    assert target.read_text() == "the previous checkpoint"
    assert sorted(os.listdir(tmp_path)) == ["last.keras"]


def test_a_path_too_long_for_what_the_tools_write_in_it_is_refused(tmp_path):
    """Checked before any write, with the limits of the file system it is on (a 4,034-
    character --model-dir used to fail inside TensorFlow's TensorBoard writer)."""
    path_max = os.pathconf(str(tmp_path), "PC_PATH_MAX")
    deep = os.path.join(str(tmp_path), *["d" * 200] * (path_max // 201))
    with pytest.raises(files.RefusedError, match=f"--model-dir '.*' is {len(deep):,} characters "
                       f"long; .* past this system's limit of {path_max:,} for a path"):
        files.ensure_directory(deep, "--model-dir")
    with pytest.raises(files.RefusedError, match="has a folder name of 250 bytes"):
        files.check_replaceable(str(tmp_path / ("e" * 250)), False, None, "export folder")
    assert os.listdir(tmp_path) == []
    fits = os.path.join(str(tmp_path), *["d" * 200] * ((path_max - 400 - len(str(tmp_path))) // 201))
    assert files.ensure_directory(fits, "--model-dir") == fits


SWAP = """
import os, sys
from keras_preact import files
with files.atomic_directory({target!r}, overwrite=True, record_of=lambda p: {{"a.bin"}}) as tmp:
    open(os.path.join(tmp, "b.bin"), "w").write("new")
"""


def test_a_swap_killed_halfway_is_put_back_by_the_next_writer(tmp_path):
    """SIGKILL between the two renames of a replacement: the old folder (with the user's
    file) is displaced, not a temporary; the next writer puts it back, then refuses to
    replace it without --overwrite."""
    target = tmp_path / "export"
    target.mkdir()
    (target / "a.bin").write_text("old")
    (target / "mine.txt").write_text("the user's")
    killed = python("-c", SWAP.format(root=ROOT, target=str(target)),
                    env={"KERAS_PREACT_FAULT": "directory.swap"})
    assert killed.returncode == -9, killed.stderr
    assert not target.exists()
    (displaced,) = [n for n in os.listdir(tmp_path) if ".displaced-" in n]
    assert (tmp_path / displaced / "mine.txt").read_text() == "the user's"
    # Someone made a new folder there meanwhile: the old one holds what it lacks, so it stays.
    target.mkdir()
    with pytest.raises(files.RefusedError, match=f"left its old folder at .*{displaced}'.*, "
                       "which holds 'a.bin', 'mine.txt' that 'export' does not"):
        with files.atomic_directory(str(target)):
            pass
    assert (tmp_path / displaced / "mine.txt").read_text() == "the user's"
    target.rmdir()
    with pytest.raises(files.RefusedError, match="already exists; pass --overwrite"):
        with files.atomic_directory(str(target)):
            pass
    assert sorted(os.listdir(target)) == ["a.bin", "mine.txt"]
    assert not [n for n in os.listdir(tmp_path) if ".displaced-" in n]
    done = python("-c", SWAP.format(root=ROOT, target=str(target)))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(target)) == ["b.bin", "mine.txt"]
    assert (target / "mine.txt").read_text() == "the user's" and os.listdir(tmp_path) == ["export"]
    # Killed while removing the old folder after a complete swap: it goes, as what it kept
    # is in the new one (the same files) and the rest is recorded.
    import socket

    left = tmp_path / f".export.displaced-{socket.gethostname().replace('-', '_')}-{_dead_pid()}"
    left.mkdir()
    (left / "a.bin").write_text("old")
    os.link(target / "mine.txt", left / "mine.txt")
    with files.atomic_directory(str(target), overwrite=True, record_of=lambda p: {"a.bin", "b.bin"}):
        pass
    assert os.listdir(tmp_path) == ["export"] and (target / "mine.txt").read_text() == "the user's"


def test_a_run_written_with_the_old_spelling_gives_its_normalization(tmp_path):
    """keras_preact 0.1 wrote the training statistics under "normalisation"."""
    stats = {"mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]}
    files.write_json(str(tmp_path / files.RUN_CONFIG),
                     {"format": files.RUN_FORMAT, "identity": {"arch": "resnet20"},
                      "normalisation": stats})
    config = files.run_config(str(tmp_path))
    assert config["normalization"] == stats and "normalisation" not in config


def test_a_file_put_in_the_old_folder_during_the_swap_stays(tmp_path, monkeypatch):
    """The user's files are linked into the new folder before the swap; one that appears in
    the old folder after that is not removed with it: the old folder stays, named."""
    target = tmp_path / "export"
    target.mkdir()
    (target / "a.bin").write_text("old")
    sync = files._fsync_tree

    def user_writes_then_sync(path):  # between the linking and the renames
        (target / "late.txt").write_text("the user's")
        sync(path)

    monkeypatch.setattr(files, "_fsync_tree", user_writes_then_sync)
    with pytest.raises(files.RefusedError, match="which holds 'late.txt' that 'export' does not"):
        with files.atomic_directory(str(target), overwrite=True,
                                    record_of=lambda p: {"a.bin"}) as tmp:
            pathlib.Path(tmp, "b.bin").write_text("new")
    assert sorted(os.listdir(target)) == ["b.bin"]
    (displaced,) = [n for n in os.listdir(tmp_path) if ".displaced-" in n]
    assert (tmp_path / displaced / "late.txt").read_text() == "the user's"
