"""Commit markers: object stores have no rename, so a directory is published file by file and
trusted only through its marker, ``_COMMITTED``, written last.

The marker is a manifest: every file's relative path, size and sha256. ``publish(local_dir, dest)``
removes an existing marker first when the new upload changes or drops a file it lists (readers then
see an uncommitted prefix, not a mix), uploads the new and changed files, deletes the dropped ones
and writes the marker. Readers (``committed``, ``fetch``) trust only files a marker lists, and a
download is checked against the listed sha256. A prefix without a marker (a publisher that died
halfway) is not trusted at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from raylm.errors import RaylmError
from raylm.storage.location import StoragePath

MARKER = "_COMMITTED"
FORMAT = "raylm.commit/1"


class NotCommitted(RaylmError):
    """A storage prefix without a (valid) commit marker, or a file that does not match it."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_of(local_dir: Path, exclude: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """{relative path: {size, sha256}} of every file below ``local_dir``, but the top-level names in ``exclude``."""
    files = {}
    for path in sorted(Path(local_dir).rglob("*")):
        rel = path.relative_to(local_dir).as_posix()
        if not path.is_file() or path.name == MARKER or rel.split("/")[0] in exclude:
            continue
        files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return files


def committed(dest: StoragePath) -> dict[str, dict[str, Any]] | None:
    """The files the marker at ``dest`` lists, or None where there is no valid marker."""
    try:
        marker = dest.join(MARKER).read_json()
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT or not isinstance(marker.get("files"), dict):
        return None
    return marker["files"]


def publish(local_dir: Path, dest: StoragePath, *, exclude: tuple[str, ...] = ()) -> dict[str, int]:
    """Upload ``local_dir`` to ``dest`` and commit it (marker last). Files whose sha256 the previous
    marker already lists are not uploaded again. Returns {"uploaded_bytes", "files"}."""
    new = manifest_of(local_dir, exclude)
    old = committed(dest) or {}
    changed = [rel for rel in new if old.get(rel) != new[rel]]
    dropped = [rel for rel in old if rel not in new]
    if old and (dropped or any(rel in old for rel in changed)):
        dest.join(MARKER).delete_file()  # a listed file is about to change: uncommitted until the new marker
    uploaded = 0
    for rel in changed:
        dest.join(rel).upload_file(Path(local_dir) / rel)
        uploaded += new[rel]["size"]
    for rel in dropped:
        dest.join(rel).delete_file()
    dest.join(MARKER).write_json({"format": FORMAT, "written": time.time(), "files": new})
    return {"uploaded_bytes": uploaded, "files": len(new)}


def commit_root(location: StoragePath, max_up: int = 8) -> tuple[StoragePath, str, dict[str, dict[str, Any]]] | None:
    """The nearest committed prefix at or above ``location`` that lists files below it:
    (root, ``location`` relative to it, the listed files below it keyed by their path below ``location``)."""
    root, rel = location, ""
    for _ in range(max_up + 1):
        files = committed(root)
        if files is not None:
            prefix = f"{rel}/" if rel else ""
            below = {k[len(prefix):]: v for k, v in files.items() if k.startswith(prefix)}
            if below:
                return root, rel, below
        if "/" not in root.path.strip("/"):  # the bucket (or the file system's root): nothing above
            return None
        rel = f"{root.name}/{rel}" if rel else root.name
        root = root.parent
    return None


def fetch(location: StoragePath, local_dir: Path, *, only: tuple[str, ...] | None = None,
          exclude: tuple[str, ...] = ()) -> int:
    """Download the committed files below ``location`` into ``local_dir`` (sha256 checked);
    ``only``/``exclude``: relative paths (or their top-level names) to keep or leave out. Returns the
    bytes downloaded; 0 when nothing below ``location`` is committed."""
    found = commit_root(location)
    if found is None:
        return 0
    root, rel, files = found
    total = 0
    for name, entry in files.items():
        top = name.split("/")[0]
        if (only is not None and top not in only and name not in only) or top in exclude:
            continue
        target = Path(local_dir) / name
        location.join(name).download_file(target)
        if sha256_file(target) != entry["sha256"]:
            target.unlink()
            raise NotCommitted(f"{location.join(name)}: content does not match its commit marker at {root} "
                               "(being rewritten? retry)")
        total += entry["size"]
    return total


def cache_root() -> Path:
    """Where downloaded artifacts and checkpoints are kept, keyed by content: ``RAYLM_CACHE_DIR`` or
    ``~/.cache/raylm``. Safe to delete at any time."""
    return Path(os.environ.get("RAYLM_CACHE_DIR") or Path.home() / ".cache" / "raylm").expanduser()


def cached_tree(location: StoragePath, *, require_commit: bool = True) -> Path:
    """A local copy of the directory at ``location``: the path itself when local; else a download into
    ``<cache>/trees/<key>``, where the key is the sha256 of the committed files' checksums (or, for
    ``require_commit=False``, e.g. Ray Train's own checkpoints, of the URI and its files' sizes)."""
    from raylm.atomic import atomic_directory

    if location.is_local:
        return location.local_path
    found = commit_root(location)
    if found is not None:
        key = hashlib.sha256(json.dumps(sorted((k, v["sha256"]) for k, v in found[2].items())).encode()).hexdigest()
    elif require_commit:
        raise NotCommitted(f"{location}: not committed (no {MARKER} at or above it lists its files)")
    else:
        listing = list(location.walk_files())
        if not listing:
            raise FileNotFoundError(f"{location}: nothing there")
        key = hashlib.sha256(json.dumps([location.uri, listing]).encode()).hexdigest()
    final = cache_root() / "trees" / key[:32]
    if final.is_dir():
        return final
    with atomic_directory(final) as tmp:
        if found is not None:
            fetch(location, tmp)
        else:
            location.download_tree(tmp)
    return final
