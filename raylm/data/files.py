"""Listing labelled files and the deterministic train/validation split shared by all modalities."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def in_validation(key: str | bytes, fraction: float) -> bool:
    """Stable split by content key: the same sample lands in the same split on every run and
    node, so later stages (compression, tuning) evaluate on exactly the data training held out."""
    data = key.encode() if isinstance(key, str) else key
    return (zlib.crc32(data) % 10_000) < fraction * 10_000


def validation_mask(keys, fraction: float) -> np.ndarray:
    return np.fromiter((in_validation(k, fraction) for k in keys), dtype=bool, count=len(keys))


def list_class_folder(root: str, extensions: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``root/<label>/<file>`` -> (sorted labels, sorted file paths). Only names are listed here;
    the bytes are read by Ray Data on its workers."""
    base = Path(root)
    labels = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [
        str(base / label / name)
        for label in labels
        for name in sorted(os.listdir(base / label))
        if name.lower().endswith(extensions)
    ]
    if len(labels) < 2 or not files:
        raise ValueError(f"data.path: {root} must hold at least 2 class folders of "
                         f"{'/'.join(extensions)} files (found {len(labels)} folders, {len(files)} files)")
    return labels, files


def split_files(files: list[str], root: str, fraction: float) -> tuple[list[str], list[str]]:
    train, val = [], []
    for path in files:
        (val if in_validation(os.path.relpath(path, root), fraction) else train).append(path)
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
    if "://" not in path and Path(path).is_dir():
        entries = list(Path(path).iterdir())
        if entries and all(e.suffix == ".parquet" for e in entries if e.is_file()) and any(e.is_file() for e in entries):
            return "parquet"
        return "folder"
    raise ValueError(f"data.format: cannot tell the format of {path}; set data.format")
