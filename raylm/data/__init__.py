"""Ray Data pipelines for the three modalities: files in, streamed model-ready batches out."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from raylm.data import materialize
from raylm.data.decoded import DecodedSplits, decode_key
from raylm.data.files import detect_format, label_of_file, list_class_folder, split_files, validation_mask
from raylm.data.modality import MODEL_INPUTS, modality_record
from raylm.registry import DATASETS

if TYPE_CHECKING:
    import ray.data

    from raylm.config import RaylmConfig

_DECODE_BATCH = 64


@dataclass
class Datasets:
    train: ray.data.Dataset
    validation: ray.data.Dataset
    labels: list[str]
    source: str
    fingerprint: str  # identifies the data a model was trained on (lineage in artifacts)
    # Key of the augmentation epoch clock; the training loop sets the epoch under it (augment.py).
    augment_run_id: str | None = None


def resolve_source(cfg: RaylmConfig) -> tuple[str, bool]:
    """(path, is_demo): a demo dataset is generated on first use into data.cache_dir; with URI
    storage it is also committed once under ``<storage_path>/_cache/`` and read from there, so every
    node reads the same files (``shared_demo``)."""
    if cfg.data.path is not None:
        return cfg.data.path, False
    return shared_demo(cfg, Path(DATASETS.get(cfg.task.modality, cfg.data.name)(cfg))), True


def shared_demo(cfg: RaylmConfig, local: Path) -> str:
    """A generated demo set where every node can read it: as is with local storage; with URI storage
    its copy under ``<storage_path>/_cache/<its path below data.cache_dir>``, uploaded and committed
    (marker last) by the first run that needs it."""
    from raylm.storage import StoragePath, committed, is_uri, publish

    if not is_uri(cfg.train.storage_path):
        return str(local)
    cache = Path(cfg.data.cache_dir).expanduser().resolve()
    root = local if local.is_dir() else local.parent
    dest = StoragePath.of(cfg.train.storage_path, cfg.train.storage_options).join(
        "_cache", root.resolve().relative_to(cache).as_posix())
    if committed(dest) is None:
        publish(root, dest)
    return dest.uri if local.is_dir() else dest.join(local.name).uri


def _natural_sorted(values) -> list[str]:
    labels = [str(v) for v in values]
    return sorted(labels, key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s))


def fingerprint_files(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for p in sorted(paths):
        if "://" in p:
            digest.update(p.encode())
            continue
        st = os.stat(p)
        digest.update(f"{os.path.basename(p)}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return digest.hexdigest()[:16]


def _read_table(path: str, fmt: str, shuffle=None) -> ray.data.Dataset:
    """A table or a directory of shards, read lazily; ``shuffle``: file order (raylm.data.shards)."""
    import ray.data

    if fmt == "parquet":
        return ray.data.read_parquet(path, shuffle=shuffle)
    if fmt == "csv":
        from raylm.data.check import csv_parse_options

        # Malformed lines are skipped here; the check has listed them in data_report.json.
        return ray.data.read_csv(path, parse_options=csv_parse_options(), shuffle=shuffle)
    if fmt == "jsonl":
        return ray.data.read_json(path, lines=True, shuffle=shuffle)
    raise ValueError(f"data.format: {fmt} is not a table format")


def _keep_split(batch, *, key_column: str, fraction: float, validation: bool):
    mask = validation_mask(batch[key_column], fraction)
    keep = mask if validation else ~mask
    return {k: v[keep] for k, v in batch.items()}


def decode_accepted(batch: dict, *, modality: str, settings, label_index: dict[str, int], bytes_column: str,
                    label_column: str | None = None, root: str | None = None, limits=None) -> dict[str, np.ndarray]:
    """Ray Data UDF: encoded bytes -> model inputs and label ids, leaving out what the check refused
    (same rule, ``check.acceptance_problem``); a class folder's label is its top-level folder under ``root``."""
    from raylm.data.check import label_text

    record = modality_record(modality)
    raw = batch[label_column] if label_column else [label_of_file(p, root) for p in batch["path"]]
    inputs, labels = [], []
    for data, raw_label in zip(batch[bytes_column], raw):
        label = label_text(raw_label)
        if label not in label_index:
            continue
        try:
            inputs.append(record.decode(data, settings, limits))
        except Exception:  # listed in data_report.json by the check (skip mode)
            continue
        labels.append(label_index[label])
    key = record.inputs[0]
    if not inputs:
        return {key: np.zeros((0, *record.sample_shape(settings)), np.float32), "label": np.zeros(0, np.int64)}
    return {key: np.stack(inputs), "label": np.asarray(labels, np.int64)}


def build_datasets(cfg: RaylmConfig) -> Datasets:
    """Lazy Ray Data datasets for train and validation; nothing is read into the driver.

    Inside a sweep's trial the clean splits come from the sweep's one decode (``decoded.sharing``)."""
    from raylm.data.augment import add_augment_stage
    from raylm.data.decoded import shared_for

    decoded = shared_for(cfg) or decode_splits(cfg)
    # Augmentation: train split only, a batched stage right after decoding (fused into its tasks).
    # It stays after materialize: the cached samples are the clean ones, each epoch draws anew.
    train, augment_run_id = add_augment_stage(decoded.train, cfg, batch_size=_DECODE_BATCH)
    return Datasets(train, decoded.validation, list(decoded.labels), decoded.source, decoded.fingerprint, augment_run_id)


def _table_samples(cfg: RaylmConfig, report: dict | None, raw: dict) -> int | None:
    """Rows of a table source (both splits), for ``data.materialize=auto``: the check counted them; else
    Ray Data counts them (parquet from its metadata), only when auto has to decide."""
    if report is not None:
        return int(report["accepted"])
    if cfg.data.materialize != "auto" or "://" in str(cfg.data.path or ""):
        return None
    return sum(table.count() for table in (raw.values() if cfg.data.validation_path else [raw["train"]]))


def decode_splits(cfg: RaylmConfig) -> DecodedSplits:
    """The clean train and validation splits, decoded (materialized with ``data.materialize``). A
    user's data (``data.path``) is checked once first (raylm.data.check); demo sets are generated clean."""
    import ray.data

    from raylm.data.check import check_data
    from raylm.data.shards import block_size, file_shuffle

    record = modality_record(cfg.task.modality)
    source, is_demo = resolve_source(cfg)
    fmt = detect_format(source, cfg.data.format if not is_demo else "auto")
    labels = cfg.task.labels
    frac = cfg.data.validation_fraction
    if fmt == "folder" and not record.extensions:
        raise ValueError(f"data.format: {record.name} data must be csv, jsonl or parquet, not a folder")
    # Remote sources (s3://, gs://) are read by Ray Data alone: the check lists local files.
    checked = cfg.data.check and not is_demo and "://" not in source
    report = check_data(cfg, source, fmt, report_dir=cfg.run_dir) if checked else None
    if report is not None:
        labels = labels or _natural_sorted(report["classes"])
        fingerprint = fingerprint_files(sum(report["files"].values(), []))

    if fmt == "folder":
        extensions = record.extensions
        if report is None:
            found, files = list_class_folder(source, extensions)
            labels = labels or found
            fingerprint = fingerprint_files(files)
            val_files = list_class_folder(cfg.data.validation_path, extensions)[1] if cfg.data.validation_path else []
        else:
            refused = {b["file"] for b in report["bad"]}
            files = [f for f in report["files"]["train"] if f not in refused]
            val_files = [f for f in report["files"].get("validation", []) if f not in refused]
        samples = len(files) + len(val_files)
        if cfg.data.validation_path:
            train_files, roots = files, {"train": source, "validation": cfg.data.validation_path}
        else:
            (train_files, val_files), roots = split_files(files, source, frac), {"train": source, "validation": source}
        # Class folders list files class by class, and the training loop's local shuffle buffer
        # (a few batches) cannot undo that: every batch held one or two classes and validation
        # accuracy swung by 0.3 between epochs. A seeded shuffle of the file list mixes every block.
        train_files = [train_files[i] for i in np.random.default_rng(cfg.train.seed).permutation(len(train_files))]
        # Paths must be readable from every node (a shared or object-store path on a real
        # cluster; docs/cluster.md), including data.cache_dir for the demo sets.
        with block_size(cfg):
            tables = {
                split: ray.data.read_binary_files(fs, include_paths=True, shuffle=file_shuffle(cfg) if split == "train" else None)
                for split, fs in (("train", train_files), ("validation", val_files))
            }
        label_column = None
    else:
        roots = {}
        # Only the training read is file-shuffled; validation is read in its own order.
        val_source = cfg.data.validation_path or source
        with block_size(cfg):
            raw = {"train": _read_table(source, fmt, file_shuffle(cfg)),
                   "validation": _read_table(val_source, detect_format(val_source, "auto") if cfg.data.validation_path else fmt)}
        if cfg.data.validation_path:
            tables = raw
        else:
            key = record.value_column(cfg)
            tables = {
                split: table.map_batches(_keep_split, batch_format="numpy",
                                         fn_kwargs={"key_column": key, "fraction": frac, "validation": split == "validation"})
                for split, table in raw.items()
            }
        if labels is None:  # an unchecked table: its label column's non-empty values
            from raylm.data.check import label_text

            values = raw["train"].unique(cfg.data.label_column)  # the whole table when validation is split off it
            labels = _natural_sorted({label_text(v) for v in values} - {""})
        if report is None:
            fingerprint = fingerprint_files([source] + ([cfg.data.validation_path] if cfg.data.validation_path else []))
        label_column = cfg.data.label_column
        samples = _table_samples(cfg, report, raw)

    label_index = {label: i for i, label in enumerate(labels)}
    fn, kwargs = record.prepare_stage(cfg, label_column)
    kwargs["label_index"] = label_index
    prepared = {
        split: table.map_batches(fn, batch_size=_DECODE_BATCH, batch_format="numpy",
                                 fn_kwargs=kwargs | ({"root": roots[split]} if roots else {}))
        for split, table in tables.items()
    }
    choice = materialize.choose(cfg, record, samples)
    materialize.announce(choice)
    if choice.keep:
        # Blocks live in the object store across the cluster, not in the driver.
        prepared = {split: ds.materialize() for split, ds in prepared.items()}
    return DecodedSplits(decode_key(cfg), prepared["train"], prepared["validation"], list(labels), source, fingerprint)
