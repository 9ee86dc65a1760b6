"""One pass over a user's data before training: every file or row is decoded once, bad ones are listed.

The pass runs in Ray Data (files are read and decoded on the cluster's CPUs, in parallel); the
driver only receives one small summary row per batch. Its outcome, ``<run>/data_report.json``,
lists every bad file or row with its reason, the files the layout rule leaves out, and the
accepted samples per class; the labels of a run are the classes it found. ``data.on_bad_input``
says what a bad sample does: ``skip`` leaves it out (up to ``data.max_bad_fraction`` of the data),
``fail`` stops at the first one. Training's decode stage applies the same acceptance rule
(``acceptance_problem``) with the same decoders serving uses, so what the check accepts is what trains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from raylm.config import ConfigError
from raylm.data.files import detect_format, label_of_file, scan_class_folder
from raylm.data.modality import modality_record

if TYPE_CHECKING:
    from raylm.config import RaylmConfig

log = logging.getLogger(__name__)

REPORT = "data_report.json"
FORMAT = "raylm.data_report/1"
_CHECK_BATCH = 16  # small batches: the first bad file reaches the driver within seconds
_TABLE_CHUNK = 256
_TABLE_SUFFIXES = {"csv": (".csv",), "jsonl": (".jsonl", ".json"), "parquet": (".parquet",)}


class DataError(ConfigError):
    """Data raylm refuses; the message names the file (and row) and the key to change. A ConfigError,
    so the CLI prints it as one line (``raylm: ...``, exit 2) instead of a traceback."""


def label_text(value: Any) -> str:
    """A label as text; a missing value is the empty string (a bad row, never a class). Integral
    floats read back as integers: a label column with a blank row arrives as floats in numpy."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def acceptance_problem(modality: str, value: Any, label: str, settings: Any, label_index: dict[str, int] | None,
             limits: Any = None) -> str | None:
    """Why a sample is refused, or None: the acceptance rule of the check and of training's decode stage,
    on the decoders serving calls (the modality record's ``decode``). The value's problem is named first."""
    try:
        modality_record(modality).decode(value, settings, limits)
    except Exception as err:  # any decoder failure is a bad sample, never a crashed run
        return str(err) or "cannot be decoded"
    if not label:
        return "empty label"
    if label_index is not None and label not in label_index:
        return f"label {label!r} is not one of task.labels"
    return None


def _summary(counts: Counter, bad: list[dict[str, Any]], checked: int) -> dict[str, list[str]]:
    return {"summary": [json.dumps({"checked": checked, "counts": counts, "bad": bad})]}


def check_file_batch(batch: dict, *, modality: str, settings: Any, root: str,
                     label_index: dict[str, int] | None, limits: Any = None) -> dict[str, list[str]]:
    """Ray Data UDF over ``read_binary_files``: one summary row per batch of files."""
    counts, bad = Counter(), []
    for path, data in zip(batch["path"], batch["bytes"]):
        label = label_of_file(path, root)
        reason = acceptance_problem(modality, data, label, settings, label_index, limits)
        if reason:
            bad.append({"file": path, "label": label, "reason": reason})
        else:
            counts[label] += 1
    return _summary(counts, bad, len(batch["path"]))


def skip_invalid_csv_row(row) -> str:
    """pyarrow's ``invalid_row_handler`` for training reads: the check has listed the row."""
    return "skip"


def csv_parse_options(invalid_row_handler=skip_invalid_csv_row):
    import pyarrow.csv

    # Quoted fields may span lines (reviews do); without this a block boundary can split one.
    return pyarrow.csv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid_row_handler)


def _table_chunks(path: str, fmt: str, columns: list[str], invalid: list[str]) -> Iterator[dict[str, list]]:
    """The file's rows in chunks of ``columns``, read by the same libraries Ray Data reads them with."""
    if fmt == "parquet":
        import pyarrow.parquet

        for record_batch in pyarrow.parquet.ParquetFile(path).iter_batches(batch_size=_TABLE_CHUNK, columns=columns):
            yield record_batch.to_pydict()
    elif fmt == "csv":
        import pyarrow.csv

        def note(row) -> str:
            invalid.append(f"a line with {row.actual_columns} fields where the header has {row.expected_columns}: "
                           f"{row.text[:80]!r}")
            return "skip"

        reader = pyarrow.csv.open_csv(path, parse_options=csv_parse_options(note))
        for record_batch in reader:
            yield {c: record_batch.column(c).to_pylist() for c in columns}
    else:
        import pandas

        with pandas.read_json(path, lines=True, chunksize=_TABLE_CHUNK) as reader:
            for frame in reader:
                yield {c: frame[c].tolist() if c in frame else [None] * len(frame) for c in columns}


def check_table_batch(batch: dict, *, modality: str, settings: Any, fmt: str, value_column: str, label_column: str,
                      label_index: dict[str, int] | None, stop_at_first: bool,
                      limits: Any = None) -> Iterator[dict[str, list[str]]]:
    """Ray Data UDF over table file names: one summary row per chunk of rows, with row numbers."""
    for path in batch["path"]:
        row = 0
        invalid: list[str] = []
        for chunk in _table_chunks(path, fmt, [value_column, label_column], invalid):
            counts, bad = Counter(), []
            for value, raw_label in zip(chunk[value_column], chunk[label_column]):
                row += 1
                label = label_text(raw_label)
                reason = acceptance_problem(modality, value, label, settings, label_index, limits)
                if reason:
                    bad.append({"file": path, "row": row, "label": label, "reason": reason})
                else:
                    counts[label] += 1
            bad += [{"file": path, "row": None, "label": "", "reason": reason} for reason in invalid]
            yield _summary(counts, bad, len(chunk[value_column]) + len(invalid))
            invalid.clear()
            if bad and stop_at_first:
                return


def table_files(path: str, fmt: str) -> list[str]:
    base = Path(path)
    if base.is_file():
        return [str(base)]
    files = sorted(str(p) for p in base.rglob("*") if p.is_file() and p.name.lower().endswith(_TABLE_SUFFIXES[fmt])
                   and not any(part.startswith(".") for part in p.relative_to(base).parts))
    if not files:
        raise DataError(f"data.path: {path} holds no {'/'.join(_TABLE_SUFFIXES[fmt])} files")
    return files


def table_columns(path: str, fmt: str) -> list[str]:
    if fmt == "parquet":
        import pyarrow.parquet

        return list(pyarrow.parquet.read_schema(path).names)
    if fmt == "csv":
        import pyarrow.csv

        return list(pyarrow.csv.open_csv(path, parse_options=csv_parse_options()).schema.names)
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "{}")
    try:
        return list(json.loads(first))
    except (json.JSONDecodeError, TypeError):
        raise DataError(f"{path}: the first line is not a JSON object (data.format=jsonl needs one object per line)") from None


def _require_columns(path: str, fmt: str, wanted: dict[str, str]) -> None:
    """A missing column names the key to set and lists the table's columns."""
    columns = table_columns(path, fmt)
    for key, column in wanted.items():
        if column not in columns:
            raise DataError(f"{key}: {path} has no column {column!r}; its columns are {', '.join(map(repr, columns))}. "
                            f"Set {key}=<one of them>")


def fingerprint(paths: list[str]) -> str:
    import os

    digest = hashlib.sha256()
    for p in sorted(paths):
        st = os.stat(p)
        digest.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _plan(cfg: RaylmConfig, source: str, fmt: str) -> list[dict[str, Any]]:
    try:
        return _plan_splits(cfg, source, fmt)
    except DataError:
        raise
    except ValueError as err:  # the layout rule or an unknown format, already naming the key
        raise DataError(str(err)) from None


def _plan_splits(cfg: RaylmConfig, source: str, fmt: str) -> list[dict[str, Any]]:
    """Per split source: its files and what the layout rule ignores."""
    record = modality_record(cfg.task.modality)
    roots = {"train": source} | ({"validation": cfg.data.validation_path} if cfg.data.validation_path else {})
    plan = []
    for split, root in roots.items():
        split_fmt = fmt if split == "train" else detect_format(root, "auto")
        if split_fmt == "folder":
            if not record.extensions:
                raise DataError(f"data.format: {record.name} data must be csv, jsonl or parquet, not a folder")
            folder = scan_class_folder(root, record.extensions)
            plan.append({"split": split, "root": root, "format": "folder", "files": folder.files,
                         "ignored": folder.ignored})
        else:
            files = table_files(root, split_fmt)
            value_column = record.value_column(cfg)
            for file in files:  # every file: Ray Data would stop at one without the column
                _require_columns(file, split_fmt, {record.value_column_key: value_column,
                                                   "data.label_column": cfg.data.label_column})
            plan.append({"split": split, "root": root, "format": split_fmt, "files": files, "ignored": [],
                         "value_column": value_column})
    return plan


def _dataset(entry: dict[str, Any], cfg: RaylmConfig, stop_at_first: bool):
    import ray.data

    modality, labels = cfg.task.modality, cfg.task.labels
    label_index = {label: i for i, label in enumerate(labels)} if labels else None
    settings = modality_record(modality).settings(cfg)
    common = {"modality": modality, "settings": settings, "label_index": label_index, "limits": cfg.data.limits}
    if entry["format"] == "folder":
        return ray.data.read_binary_files(entry["files"], include_paths=True).map_batches(
            check_file_batch, batch_size=_CHECK_BATCH, batch_format="numpy", fn_kwargs=common | {"root": entry["root"]})
    return ray.data.from_items([{"path": f} for f in entry["files"]]).map_batches(
        check_table_batch, batch_size=1, batch_format="numpy",
        fn_kwargs=common | {"fmt": entry["format"], "value_column": entry["value_column"],
                            "label_column": cfg.data.label_column, "stop_at_first": stop_at_first})


def _cache_key(cfg: RaylmConfig, plan: list[dict[str, Any]]) -> str:
    identity = {"format": FORMAT, "modality": cfg.task.modality, "labels": cfg.task.labels,
                "settings": modality_record(cfg.task.modality).settings(cfg).model_dump(),
                "limits": cfg.data.limits.model_dump(mode="json"),
                "columns": [cfg.data.text.text_column, cfg.data.image_column, cfg.data.audio_column, cfg.data.label_column],
                "splits": [(e["split"], e["root"], e["format"], fingerprint(e["files"])) for e in plan]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _first_bad_message(bad: dict[str, Any]) -> str:
    where = bad["file"] + (f", row {bad['row']}" if bad.get("row") else "")
    return (f"{where}: {bad['reason']} (data.on_bad_input=fail stops at the first bad sample; "
            "data.on_bad_input=skip leaves bad ones out and lists them in <run>/data_report.json)")


def _run_pass(cfg: RaylmConfig, plan: list[dict[str, Any]], stop_at_first: bool) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    bad: list[dict[str, Any]] = []
    for entry in plan:
        counts: Counter = Counter()
        checked = 0
        for row in _dataset(entry, cfg, stop_at_first).iter_rows():
            summary = json.loads(row["summary"])
            checked += summary["checked"]
            counts.update(summary["counts"])
            for item in summary["bad"]:
                bad.append(item | {"split": entry["split"]})
                if stop_at_first:
                    raise DataError(_first_bad_message(item))
        splits[entry["split"]] = {"path": entry["root"], "format": entry["format"], "checked": checked,
                                  "accepted": sum(counts.values()), "classes": dict(sorted(counts.items()))}
    checked = sum(s["checked"] for s in splits.values())
    return {
        "format": FORMAT,
        "modality": cfg.task.modality,
        "on_bad_input": cfg.data.on_bad_input,
        "max_bad_fraction": cfg.data.max_bad_fraction,
        "checked": checked,
        "accepted": sum(s["accepted"] for s in splits.values()),
        "bad_count": len(bad),
        "bad_fraction": round(len(bad) / max(checked, 1), 6),
        "classes": dict(sorted(sum((Counter(s["classes"]) for s in splits.values()), Counter()).items())),
        "splits": splits,
        "bad": sorted(bad, key=lambda b: (b["file"], b.get("row") or 0)),
        "ignored": [item for entry in plan for item in entry["ignored"]],
    }


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Whole or not at all: written to a temporary sibling and renamed."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, ensure_ascii=False)
    os.replace(tmp, path)


def check_data(cfg: RaylmConfig, source: str, fmt: str, *, report_dir: Path | None,
               enforce_policy: bool = True) -> dict[str, Any]:
    """Check ``source`` (and ``data.validation_path``) once; reuse the outcome while the files and
    acceptance settings are unchanged (Tune trials over the same data do not repeat it). Writes
    ``<report_dir>/data_report.json``, prints a one-line count, and raises DataError when the data
    is refused (``fail`` and a bad sample, or more bad than ``data.max_bad_fraction``)."""
    plan = _plan(cfg, source, fmt)
    cached = Path(cfg.data.cache_dir).expanduser() / "checks" / f"{_cache_key(cfg, plan)}.json"
    if cached.is_file():
        report = json.loads(cached.read_text(encoding="utf-8"))
        report |= {"on_bad_input": cfg.data.on_bad_input, "max_bad_fraction": cfg.data.max_bad_fraction}
    else:
        # fail: stop at the first bad sample; the check alone (enforce_policy=False) lists them all.
        report = _run_pass(cfg, plan, stop_at_first=enforce_policy and cfg.data.on_bad_input == "fail")
        _write_json(cached, report)
    report["files"] = {e["split"]: e["files"] for e in plan}  # kept in memory only: the accepted files are read
    where = report_dir / REPORT if report_dir is not None else None
    if where is not None:
        _write_json(where, {k: v for k, v in report.items() if k != "files"})
    summary = format_summary(report, where)
    if any(getattr(h, "raylm_console", False) for h in logging.getLogger("raylm").handlers):
        # Under raylm's console (`raylm train`/`tune`) stderr is <run>/logs/ray.log; its handler shows warnings.
        log.log(logging.WARNING if report["bad_count"] or report["ignored"] else logging.INFO, summary)
    else:
        print(summary, file=sys.stderr, flush=True)
    if enforce_policy:
        enforce(report, cfg, where)
    return report


def format_summary(report: dict[str, Any], where: Path | None) -> str:
    classes = ", ".join(f"{label} {n}" for label, n in report["classes"].items())
    line = (f"[raylm data] checked {report['checked']} samples: {report['accepted']} accepted ({classes}), "
            f"{report['bad_count']} bad")
    if report["bad_count"]:
        line += " skipped" if report["on_bad_input"] == "skip" else ""
    if report["ignored"]:
        line += f", {len(report['ignored'])} files ignored by the layout rule"
    return line + (f"; listed in {where}" if where is not None and (report["bad_count"] or report["ignored"]) else "")


def enforce(report: dict[str, Any], cfg: RaylmConfig, where: Path | None) -> None:
    listed = f"; every one is listed in {where}" if where is not None else ""
    if report["bad"] and cfg.data.on_bad_input == "fail":
        raise DataError(_first_bad_message(report["bad"][0]))
    if report["bad_fraction"] > cfg.data.max_bad_fraction:
        raise DataError(f"{report['bad_count']} of {report['checked']} samples are bad "
                        f"({100 * report['bad_fraction']:.1f} %, more than data.max_bad_fraction="
                        f"{cfg.data.max_bad_fraction}){listed}. Fix them, or raise data.max_bad_fraction")
    train_classes = report["splits"]["train"]["classes"]
    if len(report["classes"]) < 2 or not train_classes:
        raise DataError(f"data.path: needs accepted samples of at least 2 classes (found {dict(report['classes'])}){listed}")
