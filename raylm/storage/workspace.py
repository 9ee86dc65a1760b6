"""A run's local scratch while its storage is a URI.

raylm's stages write their files (pipeline.json, artifacts, the sweep's tables, the report, logs)
with local file I/O, atomically. With ``train.storage_path`` a URI, :func:`run_workspace` gives the
run a scratch directory (a temporary directory of this process, named after the run), fills it
with what the run already committed to storage (for re-entry), and publishes it back with a commit
marker (``commit.publish``) at every :func:`publish_workspace` and when the workspace closes; then
the scratch is deleted, so no run state stays on the node's disk. Ray Train's checkpoints never
pass through it: they go straight to the URI (``train/``, Ray's own layout, left out of the scratch).

While a workspace is open, ``RaylmConfig.run_dir`` is its scratch directory; outside one, a URI run
has no local directory and ``run_dir`` says so (``RaylmConfig.run_location`` is the storage place).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from raylm.storage.commit import cached_tree, fetch, publish
from raylm.storage.location import StoragePath, StorageURIError, is_uri

log = logging.getLogger(__name__)
RAY_OWNED = ("train",)  # Ray Train's checkpoints: written straight to the storage, never via the scratch
_OPEN: dict[str, tuple[StoragePath, Path]] = {}  # run URI -> (its location, its scratch dir) in this process


def scratch_dir(location: StoragePath) -> Path | None:
    """The open workspace's scratch for ``location`` (a run), None when there is none in this process."""
    entry = _OPEN.get(location.uri)
    return entry[1] if entry else None


@contextmanager
def run_workspace(location: StoragePath) -> Iterator[Path]:
    """The run's local directory: the location itself when local (nothing changes), else a scratch
    copy of its committed files, published back and deleted on exit. Nested calls share one."""
    if location.is_local:
        yield location.local_path
        return
    if location.uri in _OPEN:
        yield _OPEN[location.uri][1]
        return
    try:
        location.check_reachable()
    except StorageURIError as err:
        raise StorageURIError(f"train.storage_path: {err}") from None
    root = Path(tempfile.mkdtemp(prefix="raylm-scratch-", dir=os.environ.get("RAYLM_SCRATCH_DIR")))
    scratch = root / location.name
    scratch.mkdir()
    fetch(location, scratch, exclude=RAY_OWNED)
    _OPEN[location.uri] = (location, scratch)
    try:
        yield scratch
    except BaseException:
        _log_traceback(scratch)
        try:  # what the failed or interrupted command did (its logs, its status) still reaches storage
            publish_workspace(location)
        except Exception as err:  # noqa: BLE001 - the command's own error matters more
            log.warning("could not commit %s to %s: %s", scratch, location, err)
        raise
    else:
        publish_workspace(location)
    finally:
        del _OPEN[location.uri]
        shutil.rmtree(root, ignore_errors=True)


def _log_traceback(scratch: Path) -> None:
    """The failing command's traceback appended to the run's ``logs/ray.log`` in the scratch, before it is
    committed and deleted: the console says "traceback in the run's logs/ray.log", and with URI storage
    raylm.cli printed it only after the scratch was gone (the committed ray.log had none). Only where
    the console keeps that file (not with -v, where the traceback reaches the console itself)."""
    import traceback

    ray_log = scratch / "logs" / "ray.log"
    if ray_log.is_file():
        try:
            with open(ray_log, "a", encoding="utf-8") as out:
                traceback.print_exc(file=out)
        except OSError:
            pass


@contextmanager
def run_view(location: StoragePath, only: tuple[str, ...] | None = None) -> Iterator[Path]:
    """A read-only local view of a stored run (``only``: the files or top-level names to download);
    paths below it map to the run's storage (``stored``) like a workspace's, but nothing is published."""
    if location.is_local or location.uri in _OPEN:
        with run_workspace(location) as here:
            yield here
        return
    with tempfile.TemporaryDirectory(prefix="raylm-view-", dir=os.environ.get("RAYLM_SCRATCH_DIR")) as root:
        view = Path(root) / location.name
        view.mkdir()
        fetch(location, view, only=only, exclude=RAY_OWNED)
        _OPEN[location.uri] = (location, view)
        try:
            yield view
        finally:
            del _OPEN[location.uri]


def publish_workspace(location: StoragePath) -> dict[str, int] | None:
    """Commit the open workspace of ``location`` to storage now (a stage ended)."""
    scratch = scratch_dir(location)
    if scratch is None:
        return None
    return publish(scratch, location, exclude=RAY_OWNED)


def stored(path: str | os.PathLike[str] | StoragePath) -> StoragePath:
    """Where ``path`` lives in storage: a path inside an open scratch maps to its run's URI (e.g. the
    run's ``train/``, which never passes through the scratch); any other path or URI as itself."""
    if isinstance(path, StoragePath):
        return path
    if is_uri(path):
        return StoragePath.of(path)
    local = Path(path).expanduser().absolute()
    for location, scratch in _OPEN.values():
        if local == scratch or scratch in local.parents:
            rel = local.relative_to(scratch).as_posix()
            return location.join(rel) if rel != "." else location
    return StoragePath.of(local)


def public_paths(value: Any) -> Any:
    """``value`` (a record: dicts, lists, strings) with every open scratch path replaced by its
    storage URI: records name where things are for everyone, not in this process's scratch."""
    text = json.dumps(value, default=str)
    for location, scratch in _OPEN.values():
        text = text.replace(json.dumps(str(scratch))[1:-1], location.uri)
    return json.loads(text)


def localize(path: str | os.PathLike[str], options: dict[str, Any] | None = None, *,
             require_commit: bool = True) -> Path:
    """A local directory holding ``path``: itself when local; inside an open workspace, its scratch
    copy; else a verified download into the content-keyed cache (``commit.cached_tree``)."""
    if not is_uri(path):
        return Path(path).expanduser()
    location = StoragePath.of(path, options)
    for run, scratch in _OPEN.values():
        if location.uri.startswith(run.uri.rstrip("/") + "/"):
            local = scratch / location.relative_to(run)
            if local.exists():
                return local
    return cached_tree(location, require_commit=require_commit)
