"""A run directory's JSON files, read defensively (a missing or half-written file reads as None):
what the console's epoch bar and the report both read, kept below both so the console never
imports the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raylm.storage import StoragePath, stored


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def newest_checkpoint_meta(train_dir: Path | StoragePath, since: float = 0.0) -> dict[str, Any] | None:
    """``raylm.json`` of the checkpoint with the highest epoch under a Ray Train run directory
    (Ray always keeps the latest checkpoint, whose history holds every epoch); ``since``: only
    checkpoints written after this time. The directory is read where it is stored (a URI run's
    ``train/`` lives only in its storage)."""
    import pyarrow.fs

    location = stored(train_dir)
    best = None
    try:
        children = location.iterdir()
    except OSError:
        return None
    for child in children:
        if not child.name.startswith("checkpoint_"):
            continue
        meta_file = child.join("raylm.json")
        try:
            info = meta_file.fs.get_file_info(meta_file.path)
            if info.type != pyarrow.fs.FileType.File or (info.mtime is not None and info.mtime.timestamp() < since):
                continue
            meta = meta_file.read_json()
        except (OSError, ValueError):  # deleted by Ray's checkpoint manager meanwhile, or half-written
            continue
        if isinstance(meta, dict) and isinstance(meta.get("epoch"), int) and (best is None or meta["epoch"] > best["epoch"]):
            best = meta | {"path": child.uri}
    return best
