"""Listing labelled files and the deterministic train/validation split shared by all modalities.

data/'s ground floor with ``sources.py`` (which resolves ``data.path`` with these rules): nothing
here imports another file of data/."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The files a class folder of each kind holds (the image and audio modalities name these).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def in_validation(key: str | bytes, fraction: float) -> bool:
    """Stable split by content key: the same sample lands in the same split on every run and
    node, so later stages (compression, tuning) evaluate on exactly the data training held out."""
    data = key.encode() if isinstance(key, str) else bytes(key or b"")  # a missing value is a bad row, dropped later
    return (zlib.crc32(data) % 10_000) < fraction * 10_000


def validation_mask(keys, fraction: float) -> np.ndarray:
    return np.fromiter((in_validation(k, fraction) for k in keys), dtype=bool, count=len(keys))


@dataclass
class ClassFolder:
    """What a class folder holds: the files raylm reads and the ones it leaves out (and why)."""

    labels: list[str]
    files: list[str]
    ignored: list[dict[str, str]] = field(default_factory=list)


def scan_class_folder(root: str, extensions: tuple[str, ...]) -> ClassFolder:
    """The layout rule: ``root/<label>/**/<file>``. Every file with a matching extension below a
    class folder, in sub-folders too, belongs to that top-level class; hidden names (``.*``) are
    skipped; files directly in ``root`` or with another extension are listed as ignored. Only names
    are listed here; the bytes are read by Ray Data on its workers."""
    if "://" in root:
        return _scan_stored_class_folder(root, extensions)
    base = Path(root)
    files: list[str] = []
    ignored: list[dict[str, str]] = []
    for name in sorted(os.listdir(base)):
        entry = base / name
        if name.startswith("."):
            continue
        if not entry.is_dir():
            ignored.append({"file": str(entry), "reason": "not inside a class folder"})
            continue
        found = len(files)
        for folder, dirs, names in os.walk(entry):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(n for n in names if not n.startswith(".")):
                path = os.path.join(folder, file)
                if file.lower().endswith(extensions):
                    files.append(path)
                else:
                    ignored.append({"file": path, "reason": f"not a {'/'.join(extensions)} file"})
        if len(files) == found:  # said, or the class silently vanishes from the run's labels
            ignored.append({"file": f"{entry}{os.sep}", "reason": f"a class folder with no {'/'.join(extensions)} "
                                                                  "file: not a class of this run"})
    return _class_folder(root, files, ignored, extensions)


def _class_folder(root: str, files: list[str], ignored: list[dict[str, str]], extensions: tuple[str, ...]) -> ClassFolder:
    """The labels of a scanned class folder, local or stored: at least two, or the data.path error."""
    labels = sorted({label_of_file(p, root) for p in files})
    if len(labels) < 2:
        raise ValueError(f"data.path: {root} must hold at least 2 class folders of "
                         f"{'/'.join(extensions)} files (found {len(labels)} with such files, {len(files)} files)")
    return ClassFolder(labels, files, ignored)


def _scan_stored_class_folder(root: str, extensions: tuple[str, ...]) -> ClassFolder:
    """``scan_class_folder`` for a URI (``s3://bucket/images``): one recursive listing through pyarrow.fs;
    the files are named by their URIs, which Ray Data reads on any node."""
    from raylm.storage import StoragePath

    location = StoragePath.of(root)
    scheme = root.split("://", 1)[0]
    files, ignored = [], []
    for rel, _ in location.walk_files():
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts) or rel == "_COMMITTED":
            continue
        uri = f"{scheme}://{location.path}/{rel}"
        if len(parts) < 2:
            ignored.append({"file": uri, "reason": "not inside a class folder"})
        elif parts[-1].lower().endswith(extensions):
            files.append(uri)
        else:
            ignored.append({"file": uri, "reason": f"not a {'/'.join(extensions)} file"})
    return _class_folder(root, files, ignored, extensions)


def _without_scheme(path: str) -> str:
    """Ray Data names a file read from ``s3://bucket/key`` as ``bucket/key``: compare paths without the scheme."""
    return path.split("://", 1)[1] if "://" in path else path


def list_class_folder(root: str, extensions: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(sorted labels, sorted file paths) under the layout rule of ``scan_class_folder``."""
    folder = scan_class_folder(root, extensions)
    return folder.labels, folder.files


def label_of_file(path: str, root: str) -> str:
    """The class of a file: its top-level folder under ``root``, however deep the file is."""
    if "://" in root or "://" in path:
        key = _key_under(path, root)
        return key.split("/", 1)[0] if key is not None else _without_scheme(path).rsplit("/", 2)[-2]
    relative = Path(os.path.relpath(path, root))
    if relative.parts[0] == "..":  # a path spelled differently from root (a symlink): its folder
        return Path(path).parent.name
    return relative.parts[0]


def _key_under(path: str, root: str) -> str | None:
    """An object's key below ``root`` (schemes dropped), or None when it is not below it. Object
    keys are compared as strings: ``os.path.relpath`` would make them absolute against this
    process's cwd, which under ``ray job submit`` is a working directory Ray may clean up."""
    path, root = _without_scheme(path), _without_scheme(root).rstrip("/")
    return path[len(root) + 1:] if path.startswith(root + "/") else None


def split_files(files: list[str], root: str, fraction: float) -> tuple[list[str], list[str]]:
    train, val = [], []
    for path in files:
        uri = "://" in path or "://" in root
        # The same key either way (a file's path below root), so the hash split is unchanged.
        key = (_key_under(path, root) or _without_scheme(path)) if uri else os.path.relpath(path, root)
        (val if in_validation(key, fraction) else train).append(path)
    return train, val


def label_of_path(path: str) -> str:
    return Path(path).parent.name


def detect_format(path: str, declared: str) -> str:
    if declared != "auto":
        return declared
    lowered = path.lower().rstrip("/")
    for suffix, fmt in ((".parquet", "parquet"), (".csv", "csv"), (".jsonl", "jsonl"), (".json", "jsonl")):
        if lowered.endswith(suffix):
            return fmt
    if "://" in path:
        from raylm.storage import StoragePath

        location = StoragePath.of(path)
        if location.is_dir():
            names = [c.name for c in location.iterdir() if c.name != "_COMMITTED"]
            return "parquet" if names and all(n.endswith(".parquet") for n in names) else "folder"
    elif Path(path).is_dir():
        entries = list(Path(path).iterdir())
        if entries and all(e.suffix == ".parquet" for e in entries if e.is_file()) and any(e.is_file() for e in entries):
            return "parquet"
        return "folder"
    from raylm.config import ConfigError  # a field the user can fix: one line, exit 2 (no traceback)

    if Path(path).is_file():
        raise ConfigError(f"data.path: {path} is one file of no table format (csv, jsonl, parquet); give a folder "
                          "of class folders (data.path=<folder>, one subfolder per label) or a table, or set "
                          "data.format")
    raise ConfigError(f"data.format: cannot tell the format of {path}; set data.format")
