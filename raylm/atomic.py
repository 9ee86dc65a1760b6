"""Directories that appear whole or not at all: checkpoints and artifacts are read by other
processes (serving, resumed runs), which must never see a half-written one."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(final: Path):
    """Yield a temporary sibling of ``final``; on success it replaces ``final``, on error it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the artifact from a serving process of another user
    try:
        yield tmp
        if final.exists():
            # Move the old one aside first, so a crash between the two renames never leaves
            # a half-written artifact under the final name.
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}-old-", dir=final.parent))
            old.rmdir()
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
