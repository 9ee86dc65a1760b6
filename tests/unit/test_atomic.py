"""raylm/atomic.py on a real file system: whole or nothing, names of what failed, modes others can read."""

import errno
import os
import stat
from pathlib import Path

import pytest

from raylm import atomic
from raylm.atomic import StorageError, atomic_directory, atomic_write_bytes, atomic_write_text, recover


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    atomic_write_text(path, "first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by a serving process of another user


def test_a_failed_write_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    atomic_write_text(path, "good")

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageError, match=r"cannot write .*record.json: No space left on device \(the previous copy is intact\)") as err:
        atomic_write_text(path, "bad")
    assert err.value.errno == errno.ENOSPC
    assert path.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_a_failure_that_is_not_the_storage_is_raised_as_it_is(tmp_path, monkeypatch):
    def refused(*_):
        raise OSError(errno.ENOENT, "gone")

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(OSError) as err:
        atomic_write_text(tmp_path / "x", "x")
    assert not isinstance(err.value, StorageError) and err.value.errno == errno.ENOENT
    assert list(tmp_path.iterdir()) == []


def test_nothing_written_under_a_new_name_says_so(tmp_path, monkeypatch):
    import tempfile

    def read_only(*_, **__):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(StorageError, match=r"cannot write .*x.json: Read-only file system \(nothing was written under that name\)"):
        atomic_write_text(tmp_path / "x.json", "x")
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(StorageError, match="nothing was written under that name"):
        with atomic_directory(tmp_path / "artifact"):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "move-aside"])
def test_a_directory_replaces_the_old_one_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    final = tmp_path / "artifact"
    with atomic_directory(final) as tmp:
        (tmp / "a").write_text("1")
    assert stat.S_IMODE(final.stat().st_mode) == 0o755
    with atomic_directory(final) as tmp:
        assert not (tmp / "a").exists() and tmp.parent == tmp_path and tmp.name.startswith(".artifact-")
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]  # neither the temporary nor the old copy left


def test_an_error_inside_leaves_the_old_directory_and_no_temporary(tmp_path):
    final = tmp_path / "artifact"
    with atomic_directory(final) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("crashed while writing")
    assert sorted(p.name for p in final.iterdir()) == ["a"] and [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_a_storage_error_inside_names_the_directory(tmp_path):
    final = tmp_path / "artifact"
    with pytest.raises(StorageError, match=r"cannot write .*artifact: .*nothing was written under that name"):
        with atomic_directory(final):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert list(tmp_path.iterdir()) == []


def test_a_copy_moved_aside_by_a_crash_is_put_back_newest_first(tmp_path):
    final = tmp_path / "artifact"
    # Named against their age: the newest is the one put back, whatever its name.
    newer, older, oldest = tmp_path / ".artifact-old-1", tmp_path / ".artifact-old-2", tmp_path / ".artifact-old-3"
    for aside in (newer, older, oldest):
        aside.mkdir()
    (newer / "kept").write_text("y")
    os.utime(older, (2, 2))
    os.utime(oldest, (1, 1))
    recover(final)
    assert (final / "kept").read_text() == "y" and older.exists() and not newer.exists()
    recover(final)  # already there: nothing moves
    assert older.exists()
    with atomic_directory(final) as tmp:  # a write recovers first, then replaces
        (tmp / "new").write_text("z")
    assert sorted(p.name for p in final.iterdir()) == ["new"]


def test_the_exchange_swaps_two_directories_and_says_when_it_cannot(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "from_a").write_text("1")
    (b / "from_b").write_text("2")
    assert atomic._exchange(a, b) is True  # this kernel and file system offer renameat2(RENAME_EXCHANGE)
    assert [p.name for p in a.iterdir()] == ["from_b"] and [p.name for p in b.iterdir()] == ["from_a"]
    inner = a / "inner"
    inner.mkdir()
    assert atomic._exchange(a, inner) is False  # EINVAL (a directory into itself): the fallback's case
    with pytest.raises(OSError) as err:
        atomic._exchange(tmp_path / "missing", b)
    assert err.value.errno == errno.ENOENT and not isinstance(err.value, StorageError)
    assert err.value.filename == str(tmp_path / "missing") and err.value.filename2 == str(b)
    assert err.value.strerror == os.strerror(errno.ENOENT)


def test_the_exchange_takes_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / name).write_text(name)
    assert atomic._exchange(Path("a"), Path("b")) is True
    assert (tmp_path / "a" / "b").exists() and (tmp_path / "b" / "a").exists()


def test_the_temporary_is_a_hidden_sibling_named_after_the_file(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append((src, dst, open(src, "rb").read(), stat.S_IMODE(os.stat(src).st_mode)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    atomic_write_bytes(tmp_path / "record.json", b"payload")
    ((src, dst, data, mode),) = seen
    assert os.path.dirname(src) == str(tmp_path) and dst == tmp_path / "record.json"
    name = os.path.basename(src)
    assert name.startswith(".record.json-") and name.endswith(".tmp") and data == b"payload" and mode == 0o644


def test_a_write_interrupted_by_a_signal_leaves_no_temporary(tmp_path, monkeypatch):
    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "x", b"x")
    assert list(tmp_path.iterdir()) == []


def test_fsync_tree_reaches_every_file_and_directory_but_not_links(tmp_path, monkeypatch):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "f").write_text("x")
    (tmp_path / "d" / "e" / "g").write_text("y")
    (tmp_path / "d" / "link").symlink_to(tmp_path / "nowhere")  # a dangling link: opening it would fail
    synced = []
    monkeypatch.setattr(atomic, "fsync_path", lambda p: synced.append(str(p.relative_to(tmp_path))))
    atomic.fsync_tree(tmp_path / "d")
    assert sorted(synced) == ["d", "d/e", "d/e/g", "d/f"]


def test_a_storage_error_keeps_its_errno_and_an_existing_storage_error_is_kept(tmp_path):
    (tmp_path / "here").write_text("x")
    err = atomic._storage_error(tmp_path / "here", OSError(errno.EIO, "Input/output error"))
    assert isinstance(err, StorageError) and err.errno == errno.EIO
    assert str(err) == f"[Errno {errno.EIO}] cannot write {tmp_path / 'here'}: Input/output error (the previous copy is intact)"
    assert atomic._storage_error(tmp_path / "here", err) is err
    other = OSError(errno.ENOENT, "gone")
    assert atomic._storage_error(tmp_path / "here", other) is other


def test_a_failed_second_rename_of_the_fallback_puts_the_old_copy_back(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    final = tmp_path / "artifact"
    with atomic_directory(final) as tmp:
        (tmp / "good").write_text("1")
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((os.path.basename(src), os.path.basename(dst)))
        if os.path.basename(str(src)).startswith(".artifact-") and "-old-" not in str(src) and str(dst) == str(final):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(StorageError, match="the previous copy is intact"):
        with atomic_directory(final) as tmp:
            (tmp / "new").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["good"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_a_directory_under_missing_parents_and_the_copy_moved_aside_is_a_hidden_sibling(tmp_path, monkeypatch):
    final = tmp_path / "runs" / "r1" / "artifact"
    with atomic_directory(final) as tmp:
        (tmp / "a").write_text("1")
    assert (final / "a").read_text() == "1"
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    moves = []
    real_rename = os.rename

    def rename(src, dst):
        moves.append((str(src), str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with atomic_directory(final) as tmp:
        (tmp / "b").write_text("2")
    aside = moves[0][1]
    assert moves[0][0] == str(final) and os.path.dirname(aside) == str(final.parent)
    assert os.path.basename(aside).startswith(".artifact-old-")  # what recover() looks for after a crash
    assert moves[1][1] == str(final) and sorted(p.name for p in final.iterdir()) == ["b"]
