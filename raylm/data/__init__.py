"""Ray Data pipelines for the three modalities: files in, streamed model-ready batches out.

data/ is one-way, four floors, each file importing only its own floor and those below:
sources (``files.py``, ``sources.py``: ``data.path`` resolved once into a ``DataSource``) -> rules
(``rules.py``, ``limits.py``: acceptance checks as functions of values) -> modalities
(``modality.py`` with its decoders, ops and drawings) -> build (this file, ``check.py``,
``decoded.py``, ``materialize.py``, ``shards.py``, ``augment.py``, ``augment_preview.py``).
tests/test_layering.py holds the floors; docs/contracts.md describes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from raylm.data import materialize
from raylm.data.decoded import DecodedSplits, decode_key
from raylm.data.files import detect_format, validation_mask  # noqa: F401
from raylm.data.modality import MODEL_INPUTS, decode_accepted, modality_record  # noqa: F401  (MODEL_INPUTS: imported from here)
from raylm.data.sources import DataSource, active_for, fingerprint_files, resolve, resolve_source, reusing, shared_demo  # noqa: F401

if TYPE_CHECKING:
    import ray.data

    from raylm.config import RaylmConfig
    from raylm.data.arrays import SplitArrays

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
    # The clean splits as numpy columns when a population sweep held them in memory (raylm/data/arrays.py).
    arrays: SplitArrays | None = None
    # The train split before the augmentation stage (``train`` when there is none): a one-worker run
    # over kept splits reads it into memory and augments in its own process (raylm/train/memory_feed.py).
    clean_train: ray.data.Dataset | None = None


def data_source(cfg: RaylmConfig) -> DataSource:
    """The run's resolved ``data.path``: the active one (:func:`reusing`, a pipeline's) when it was
    resolved for this config's data, else resolved now for ``cfg.task.modality``."""
    return active_for(cfg) or resolve(cfg, extensions=modality_record(cfg.task.modality).extensions)


def _natural_sorted(values) -> list[str]:
    labels = [str(v) for v in values]
    return sorted(labels, key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s))


def _read_table(path: str, fmt: str, shuffle=None, *, files: int = 0) -> ray.data.Dataset:
    """A table or a directory of shards, read lazily; ``shuffle``: file order (raylm.data.shards).

    ``files``: how many shards were listed. With two or more, one read task per shard: left to itself,
    Ray Data asks for at least 200 blocks and splits every read task's output to get them (24 shards
    of 8 MiB blocks: each block cut in 3), and a read whose blocks are split is never fused with the
    decode stage after it (issue 31). A single file keeps Ray's split (its decode then runs in parallel)."""
    import ray.data

    blocks = {"override_num_blocks": files} if files >= 2 else {}
    if fmt == "parquet":
        return ray.data.read_parquet(path, shuffle=shuffle, **blocks)
    if fmt == "csv":
        from raylm.data.check import csv_parse_options

        # Malformed lines are skipped here; the check has listed them in data_report.json.
        return ray.data.read_csv(path, parse_options=csv_parse_options(), shuffle=shuffle, **blocks)
    if fmt == "jsonl":
        from raylm.data.check import json_lines_table

        # Lines parsed by raylm (json_lines_table): a line holding no JSON object is skipped; the check has
        # listed it in data_report.json (Ray's JSON reader failed the whole read on it).
        return ray.data.read_text(path, shuffle=shuffle, **blocks).map_batches(
            json_lines_table, batch_size=None, batch_format="pyarrow")
    raise ValueError(f"data.format: {fmt} is not a table format")


def _keep_split(batch, *, key_column: str, fraction: float, validation: bool):
    mask = validation_mask(batch[key_column], fraction)
    keep = mask if validation else ~mask
    return {k: v[keep] for k, v in batch.items()}


def build_datasets(cfg: RaylmConfig, *, source: DataSource | None = None) -> Datasets:
    """Lazy Ray Data datasets for train and validation; nothing is read into the driver.

    Inside a sweep's trial the clean splits come from the sweep's one decode (``decoded.sharing``).
    ``source``: the run's resolved data (default: :func:`data_source`)."""
    from raylm.data.augment import add_augment_stage
    from raylm.data.decoded import shared_for

    decoded = shared_for(cfg) or decode_splits(cfg, source=source)
    # Augmentation: train split only, a batched stage right after decoding (fused into its tasks).
    # It stays after materialize: the cached samples are the clean ones, each epoch draws anew.
    train, augment_run_id = add_augment_stage(decoded.train, cfg, batch_size=_DECODE_BATCH)
    return Datasets(train, decoded.validation, list(decoded.labels), decoded.source, decoded.fingerprint, augment_run_id,
                    arrays=decoded.arrays, clean_train=decoded.train)


def _table_samples(cfg: RaylmConfig, report: dict | None, raw: dict) -> int | None:
    """Rows of a table source (both splits), for ``data.materialize=auto``: the check counted them; else
    Ray Data counts them (parquet from its metadata), only when auto has to decide."""
    if report is not None:
        return int(report["accepted"])
    if cfg.data.materialize != "auto" or "://" in str(cfg.data.path or ""):
        return None
    return sum(table.count() for table in (raw.values() if cfg.data.validation_path else [raw["train"]]))


def _in_chunks(batch: dict, *, stage, chunk: int, **kwargs):
    """A whole block through ``stage`` (a batch UDF) ``chunk`` rows at a time, each result yielded as it is
    made: the worker holds one chunk's decoded rows, not the block's (Ray Data builds the output blocks
    from what is yielded, at its target block size)."""
    rows = len(next(iter(batch.values()), ()))
    for start in range(0, max(rows, 1), chunk):  # an empty block still yields its (empty) columns once
        yield stage({name: column[start:start + chunk] for name, column in batch.items()}, **kwargs)


def decode_splits(cfg: RaylmConfig, *, source: DataSource | None = None) -> DecodedSplits:
    """The clean train and validation splits, decoded (materialized with ``data.materialize``). A
    user's data (``data.path``) is checked once first (raylm.data.check); demo sets are generated clean.
    ``source``: the run's resolved data (default: :func:`data_source`)."""
    import ray.data

    from raylm.data.check import check_data
    from raylm.data.shards import bounded_stream, file_shuffle

    record = modality_record(cfg.task.modality)
    resolved = source or data_source(cfg)
    source, fmt, fingerprint = resolved.location, resolved.format, resolved.fingerprint
    labels = cfg.task.labels
    frac = cfg.data.validation_fraction
    # Remote sources (s3://, gs://) are read by Ray Data alone: the check lists local files.
    report = check_data(cfg, resolved, report_dir=cfg.run_dir) if resolved.checked else None
    if report is not None:
        labels = labels or _natural_sorted(report["classes"])

    if fmt == "folder":
        refused = {b["file"] for b in report["bad"]} if report is not None else set()
        train_files = [f for f in resolved.train_files if f not in refused]
        val_files = [f for f in resolved.validation_files if f not in refused]
        labels = labels or list(resolved.labels)
        samples = len(train_files) + len(val_files)
        roots = {"train": source, "validation": resolved.validation_path or source}
        # Class folders list files class by class, and the training loop's local shuffle buffer
        # (a few batches) cannot undo that: every batch held one or two classes and validation
        # accuracy swung by 0.3 between epochs. A seeded shuffle of the file list mixes every block.
        train_files = [train_files[i] for i in np.random.default_rng(cfg.train.seed).permutation(len(train_files))]
        # Paths must be readable from every node (a shared or object-store path on a real
        # cluster; docs/cluster.md), including data.cache_dir for the demo sets.
        with bounded_stream(cfg):
            tables = {
                split: ray.data.read_binary_files(fs, include_paths=True, shuffle=file_shuffle(cfg) if split == "train" else None)
                for split, fs in (("train", train_files), ("validation", val_files))
            }
        label_column = None
    else:
        roots = {}
        # Only the training read is file-shuffled; validation is read in its own order.
        val_root = resolved.roots.get("validation", resolved.roots["train"])
        with bounded_stream(cfg):
            raw = {"train": _read_table(source, fmt, file_shuffle(cfg), files=len(resolved.roots["train"].files)),
                   "validation": _read_table(val_root.root, val_root.format, files=len(val_root.files))}
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
            from raylm.data.rules import label_text

            values = raw["train"].unique(cfg.data.label_column)  # the whole table when validation is split off it
            labels = _natural_sorted({label_text(v) for v in values} - {""})
        label_column = cfg.data.label_column
        samples = _table_samples(cfg, report, raw)

    label_index = {label: i for i, label in enumerate(labels)}
    fn, kwargs = record.prepare_stage(cfg, label_column)
    kwargs["label_index"] = label_index
    # Whole blocks (batch_size=None), decoded _DECODE_BATCH rows at a time inside the UDF: a map stage
    # with a batch size is not fused with the read before it (Ray Data's operator fusion), so every
    # encoded block went through the object store between a read task and a decode task, and on a
    # 2-core node the two tasks took turns on the one CPU Ray Data has (issue 31). Fused, one task
    # reads and decodes, and only decoded blocks enter the store.
    prepared = {
        split: table.map_batches(_in_chunks, batch_size=None, batch_format="numpy",
                                 fn_kwargs={"stage": fn, "chunk": _DECODE_BATCH} | kwargs | ({"root": roots[split]} if roots else {}))
        for split, table in tables.items()
    }
    choice = materialize.choose(cfg, record, samples)
    materialize.announce(choice)
    if choice.keep:
        # Blocks live in the object store across the cluster, not in the driver.
        prepared = {split: ds.materialize() for split, ds in prepared.items()}
    return DecodedSplits(decode_key(cfg), prepared["train"], prepared["validation"], list(labels), source, fingerprint)
