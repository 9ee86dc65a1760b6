"""A run directory's JSON files, read defensively (a missing or half-written file reads as None):
what the console's epoch bar and the report both read, kept below both so the console never
imports the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def newest_checkpoint_meta(train_dir: Path, since: float = 0.0) -> dict[str, Any] | None:
    """``raylm.json`` of the checkpoint with the highest epoch under a Ray Train run directory
    (Ray always keeps the latest checkpoint, whose history holds every epoch); ``since``: only
    checkpoints written after this time."""
    best = None
    for path in Path(train_dir).glob("checkpoint_*/raylm.json"):
        try:
            if path.stat().st_mtime < since:
                continue
        except OSError:  # deleted by Ray's checkpoint manager meanwhile
            continue
        meta = read_json(path)
        if isinstance(meta, dict) and isinstance(meta.get("epoch"), int) and (best is None or meta["epoch"] > best["epoch"]):
            best = meta | {"path": str(path.parent)}
    return best
