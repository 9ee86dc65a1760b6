"""raylm/atomic.py on a real file system: whole or nothing, names of what failed, modes others can read."""

import errno
import os
import stat

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
    older, newer = tmp_path / ".artifact-old-1", tmp_path / ".artifact-old-2"
    older.mkdir()
    newer.mkdir()
    (newer / "kept").write_text("y")
    os.utime(older, (1, 1))
    recover(final)
    assert (final / "kept").read_text() == "y" and older.exists() and not newer.exists()
    recover(final)  # already there: nothing moves
    assert older.exists()
    with atomic_directory(final) as tmp:  # a write recovers first, then replaces
        (tmp / "new").write_text("z")
    assert sorted(p.name for p in final.iterdir()) == ["new"]
