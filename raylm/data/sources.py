"""data/'s ground floor: ``data.path`` resolved once into a :class:`DataSource`.

Where the data lies (a folder, a table, a URI, or a generated demo set), its format, the files a
run reads per split, the class folder's labels, the train/validation split of a class folder and
the fingerprint that names the data in checkpoints and artifacts: all found here, once per run.
Training's decode, the data check, compression's datasets and the pipeline's smoke request take
the record instead of listing ``data.path`` again. A pipeline resolves it at its start and makes it
the active source (:func:`reusing`): every ``build_datasets`` inside (the sweep's decode, the
retrain, each compression attempt, the evaluation) finds it there.

The layout and split rules (``files.py``) are this floor's; nothing here imports a higher file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from raylm.config import ConfigError
from raylm.data.files import detect_format, scan_class_folder, split_files
from raylm.registry import DATASETS

if TYPE_CHECKING:
    from raylm.config import RaylmConfig

TABLE_SUFFIXES = {"csv": (".csv",), "jsonl": (".jsonl", ".json"), "parquet": (".parquet",)}

# How many times this process resolved a source (tests count that a run resolves once).
RESOLUTIONS = {"count": 0}


class DataError(ConfigError):
    """Data raylm refuses; the message names the file (and row) and the key to change. A ConfigError,
    so the CLI prints it as one line (``raylm: ...``, exit 2) instead of a traceback."""


@dataclass(frozen=True)
class SplitRoot:
    """One split's own source: ``data.path`` for train, ``data.validation_path`` for validation."""

    root: str
    format: str
    files: tuple[str, ...]  # a class folder's files, a local table's files; () for a remote table
    ignored: tuple[dict[str, str], ...] = ()  # what the layout rule leaves out, and why


@dataclass(frozen=True)
class DataSource:
    """``data.path`` resolved: what every later reader of the data takes instead of the path."""

    key: str  # source_key of the config it was resolved for
    modality: str
    location: str  # data.path, or the generated demo set (its committed copy under URI storage)
    is_demo: bool
    format: str
    roots: dict[str, SplitRoot]  # "train", and "validation" when data.validation_path is set
    checked: bool  # the data check runs first (a user's local data with data.check)
    validation_fraction: float
    labels: tuple[str, ...] | None  # a class folder's classes; None for tables (the check or Ray Data finds them)
    train_files: tuple[str, ...] = ()  # a class folder's split, before the check's refusals
    validation_files: tuple[str, ...] = ()
    fingerprint: str = ""  # names the data in checkpoint and artifact lineage
    extensions: tuple[str, ...] = field(default=(), repr=False)

    @property
    def uri(self) -> bool:
        """Object storage (s3://, gs://): read by Ray Data alone, not listed or checked here."""
        return "://" in self.location

    @property
    def validation_path(self) -> str | None:
        return self.roots["validation"].root if "validation" in self.roots else None

    @property
    def files(self) -> dict[str, list[str]]:
        """Every listed file per split root (what the data check reads)."""
        return {split: list(root.files) for split, root in self.roots.items()}


def source_key(cfg: RaylmConfig) -> str:
    """What decides a resolution: the modality, the data section, and where a demo set is committed."""
    parts = {"modality": cfg.task.modality, "data": cfg.data.model_dump(mode="json"),
             "storage": [str(cfg.train.storage_path), cfg.train.storage_options]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_source(cfg: RaylmConfig) -> tuple[str, bool]:
    """(path, is_demo): a demo dataset is generated on first use into data.cache_dir; with URI
    storage it is also committed once under ``<storage_path>/_cache/`` and read from there, so every
    node reads the same files (``shared_demo``)."""
    if cfg.data.path is not None:
        return cfg.data.path, False
    return shared_demo(cfg, Path(DATASETS.get(cfg.task.modality, cfg.data.name)(cfg))), True


def cache_root(cfg: RaylmConfig):
    """Where the shared ``_cache/`` of a URI storage lives: ``train.storage_path``; for a sweep's trial, which
    writes under ``<storage_path>/<run>/tune/trials`` (raylm/tune/sweep.py ``trials_location``), the sweep's
    own ``storage_path``, where the sweep already published the demo set (each S3 sweep uploaded a second
    copy among its trials' directories)."""
    from raylm.storage import StoragePath

    root = StoragePath.of(cfg.train.storage_path, cfg.train.storage_options)
    if root.name == "trials" and root.parent.name == "tune":
        return root.parent.parent.parent
    return root


def shared_demo(cfg: RaylmConfig, local: Path) -> str:
    """A generated demo set where every node can read it: as is with local storage; with URI storage
    its copy under ``<storage_path>/_cache/<its path below data.cache_dir>``, uploaded and committed
    (marker last) by the first run that needs it."""
    from raylm.storage import StoragePath, committed, is_uri, publish

    if not is_uri(cfg.train.storage_path):
        return str(local)
    cache = Path(cfg.data.cache_dir).expanduser().resolve()
    root = local if local.is_dir() else local.parent
    dest = cache_root(cfg).join("_cache", root.resolve().relative_to(cache).as_posix())
    if committed(dest) is None:
        publish(root, dest)
    return dest.uri if local.is_dir() else dest.join(local.name).uri


def fingerprint_files(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for p in sorted(paths):
        if "://" in p:
            digest.update(p.encode())
            continue
        st = os.stat(p)
        digest.update(f"{os.path.basename(p)}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return digest.hexdigest()[:16]


def table_files(path: str, fmt: str) -> list[str]:
    base = Path(path)
    if base.is_file():
        return [str(base)]
    files = sorted(str(p) for p in base.rglob("*") if p.is_file() and p.name.lower().endswith(TABLE_SUFFIXES[fmt])
                   and not any(part.startswith(".") for part in p.relative_to(base).parts))
    if not files:
        raise DataError(f"data.path: {path} holds no {'/'.join(TABLE_SUFFIXES[fmt])} files")
    return files


def list_root(root: str, fmt: str, *, modality: str, extensions: tuple[str, ...]) -> SplitRoot:
    """One split root's files under the layout rule (a folder) or the table rule (a local table)."""
    if fmt == "folder":
        if not extensions:
            raise DataError(f"data.format: {modality} data must be csv, jsonl or parquet, not a folder")
        folder = scan_class_folder(root, extensions)
        return SplitRoot(root, fmt, tuple(folder.files), tuple(folder.ignored))
    return SplitRoot(root, fmt, () if "://" in root else tuple(table_files(root, fmt)))


def resolve(cfg: RaylmConfig, *, extensions: tuple[str, ...]) -> DataSource:
    """Resolve ``data.path`` (or generate the demo set) for ``cfg``; ``extensions``: the files a class
    folder of this modality holds (the modality's; () for tables only). Layout errors are DataErrors."""
    RESOLUTIONS["count"] += 1
    location, is_demo = resolve_source(cfg)
    data = cfg.data
    try:
        fmt = detect_format(location, data.format if not is_demo else "auto")
        checked = data.check and not is_demo and "://" not in location
        roots = {"train": list_root(location, fmt, modality=cfg.task.modality, extensions=extensions)}
        if data.validation_path:
            roots["validation"] = list_root(data.validation_path, detect_format(data.validation_path, "auto"),
                                            modality=cfg.task.modality, extensions=extensions)
    except DataError:
        raise
    except ValueError as err:  # the layout rule or an unknown format, already naming the key
        raise DataError(str(err)) from None
    train = roots["train"]
    labels = train_files = validation_files = None
    if fmt == "folder":
        from raylm.data.files import label_of_file

        labels = tuple(sorted({label_of_file(p, location) for p in train.files}))
        if data.validation_path:
            train_files, validation_files = list(train.files), list(roots["validation"].files)
        else:
            train_files, validation_files = split_files(list(train.files), location, data.validation_fraction)
    # The fingerprint a run has always recorded: the check's files when checked; else a folder's
    # train files, or a table's path(s).
    if checked:
        fingerprint = fingerprint_files([f for root in roots.values() for f in root.files])
    elif fmt == "folder":
        fingerprint = fingerprint_files(list(train.files))
    else:
        fingerprint = fingerprint_files([location] + ([data.validation_path] if data.validation_path else []))
    return DataSource(key=source_key(cfg), modality=cfg.task.modality, location=location, is_demo=is_demo,
                      format=fmt, roots=roots, checked=checked, validation_fraction=data.validation_fraction,
                      labels=labels, train_files=tuple(train_files or ()),
                      validation_files=tuple(validation_files or ()), fingerprint=fingerprint, extensions=extensions)


# ---- one resolution per run ---------------------------------------------------------------------

_active: ContextVar[DataSource | None] = ContextVar("raylm_active_data_source", default=None)


@contextlib.contextmanager
def reusing(source: DataSource | None) -> Iterator[None]:
    """Within the block, readers of a config whose :func:`source_key` is ``source.key`` take ``source``."""
    token = _active.set(source)
    try:
        yield
    finally:
        _active.reset(token)


def active_for(cfg: RaylmConfig) -> DataSource | None:
    source = _active.get()
    return source if source is not None and source.key == source_key(cfg) else None
