"""Files and directories that appear whole or not at all: checkpoints, artifacts and run records
are read by other processes (serving, resumed runs), which must never see a half-written one.

Everything is fsynced before it is renamed into place, and the rename of a directory that
replaces another is an atomic exchange (``renameat2(RENAME_EXCHANGE)``) where the kernel and
file system offer it; elsewhere the old directory is moved aside first, moved back if the second
rename fails, and put back by the next write if a crash came between the two renames.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# The storage itself refused: full, over quota or a file-size limit, read-only, not permitted, failing.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


class StorageError(OSError):
    """A write refused by the storage, naming the file or directory that was being written; the
    copy already under that name (if any) is untouched."""


def _storage_error(final: Path, err: OSError) -> OSError:
    if isinstance(err, StorageError) or err.errno not in _STORAGE_ERRNOS:
        return err
    kept = "the previous copy is intact" if final.exists() else "nothing was written under that name"
    return StorageError(err.errno, f"cannot write {final}: {err.strerror} ({kept})")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (and ``root``), so a rename publishes data, not holes."""
    for directory, _, files in os.walk(root):
        for name in files:
            if not os.path.islink(os.path.join(directory, name)):
                fsync_path(Path(directory) / name)
        fsync_path(Path(directory))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` through a uniquely named temporary sibling: two writers never share a temp file."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``atomic_write_text`` for bytes."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _storage_error(path, err) from err
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other users' processes
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _storage_error(path, err) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the platform or file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _aside_prefix(final: Path) -> str:
    return f".{final.name}-old-"


def recover(final: Path) -> None:
    """After a crash between the fallback's two renames, put the copy moved aside back under ``final``."""
    if final.exists():
        return
    aside = sorted(final.parent.glob(_aside_prefix(final) + "*"), key=lambda p: p.stat().st_mtime)
    if aside:
        aside[-1].rename(final)


@contextmanager
def atomic_directory(final: Path):
    """Yield a temporary sibling of ``final``; on success it replaces ``final``, on error it is removed
    and ``final`` is left as it was."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        recover(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    except OSError as err:
        raise _storage_error(final, err) from err
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the artifact from a serving process of another user
    try:
        yield tmp
        fsync_tree(tmp)
        if not final.exists():
            tmp.rename(final)
        elif _exchange(tmp, final):
            shutil.rmtree(tmp, ignore_errors=True)  # now the old directory
        else:
            old = Path(tempfile.mkdtemp(prefix=_aside_prefix(final), dir=final.parent))
            old.rmdir()
            final.rename(old)
            try:
                tmp.rename(final)
            except BaseException:
                old.rename(final)  # roll back: the good copy keeps its name
                raise
            shutil.rmtree(old, ignore_errors=True)
        fsync_path(final.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _storage_error(final, err) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
