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
import os
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from raylm.data.files import label_of_file
from raylm.data.modality import modality_record
# The pure rules moved one floor down (rules.py), the listing to the sources (sources.py); their
# names stay importable from here.
from raylm.data.rules import enforce, format_summary, label_text, sample_problem  # noqa: F401
from raylm.data.rules import first_bad_message as _first_bad_message
from raylm.data.sources import TABLE_SUFFIXES as _TABLE_SUFFIXES  # noqa: F401
from raylm.data.sources import DataError, DataSource, table_files  # noqa: F401

if TYPE_CHECKING:
    from raylm.config import RaylmConfig

log = logging.getLogger(__name__)

REPORT = "data_report.json"
FORMAT = "raylm.data_report/1"
# The acceptance rules' revision, part of a cached check's key: a check cached under older rules is redone
# (2: a JSONL byte-order mark is not part of the first object; a text of zero-width/control characters is empty).
RULES = 2
_CHECK_BATCH = 16  # small batches: the first bad file reaches the driver within seconds
_TABLE_CHUNK = 256


def acceptance_problem(modality: str, value: Any, label: str, settings: Any, label_index: dict[str, int] | None,
             limits: Any = None) -> str | None:
    """Why a sample is refused, or None: ``rules.sample_problem`` on the modality's ``decode`` (the
    decoder serving calls): the acceptance rule of the check and of training's decode stage."""
    return sample_problem(modality_record(modality).decode, value, label, settings, label_index, limits)


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


def json_object(line: str) -> dict | None:
    """One JSONL line as the object it holds; None when it is not one (a broken line, a list, a bare
    value). The check lists such lines and training skips them, as pyarrow's CSV reader skips a malformed
    CSV row: both readers parse the lines with this one function (pandas' and pyarrow's JSON readers
    failed the whole file on one bad line: a 40-line Ray stack instead of a listed row)."""
    try:
        # The first line of a file saved with a byte-order mark (Windows editors) starts with U+FEFF: not JSON,
        # so the whole file was refused ("the first line is not a JSON object").
        value = json.loads(line.removeprefix("\ufeff"))
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def json_lines_table(batch):
    """Ray Data UDF after ``read_text`` (one row per non-empty line): the lines' objects as a table, the
    lines that hold none dropped. A column whose values mix types (a label 3 on one line, "pos" on
    another) keeps its strings and writes the others as JSON text (pyarrow needs one type a column)."""
    import pyarrow as pa

    rows = [obj for obj in map(json_object, batch["text"].to_pylist()) if obj is not None]
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.Table.from_pylist([{k: v if v is None or isinstance(v, str) else json.dumps(v) for k, v in row.items()}
                                     for row in rows])


def csv_parse_options(invalid_row_handler=skip_invalid_csv_row):
    import pyarrow.csv

    # Quoted fields may span lines (reviews do); without this a block boundary can split one.
    return pyarrow.csv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid_row_handler)


def _table_chunks(path: str, fmt: str, columns: list[str]) -> Iterator[tuple[dict[str, list], list[int], list[tuple[int | None, str]]]]:
    """The file's rows in chunks of ``columns``, read by the same libraries Ray Data reads them with, with
    each row's number (CSV: its record after the header, 1-based; JSONL: its line) and the unreadable
    rows met in the chunk as ``(number, reason)``."""
    if fmt == "parquet":
        import pyarrow.parquet

        first = 1
        for record_batch in pyarrow.parquet.ParquetFile(path).iter_batches(batch_size=_TABLE_CHUNK, columns=columns):
            yield record_batch.to_pydict(), list(range(first, first + record_batch.num_rows)), []
            first += record_batch.num_rows
    elif fmt == "csv":
        import pyarrow.csv

        invalid: list[tuple[int | None, str]] = []

        def note(row) -> str:
            # pyarrow numbers a row (the header is 1) only when it reads on one thread, as here.
            number = row.number - 1 if row.number is not None else None
            lines = row.text.splitlines()
            if len(lines) > 1:  # quoted fields may span lines, so an unclosed quote runs on to the end
                invalid.append((number, f"{len(lines)} lines read as one row of {row.actual_columns} fields (the header "
                                        f"has {row.expected_columns}) from {lines[0][:80]!r}: a quote opened there and "
                                        "never closed? Every line up to the file's end or the next quote is in it"))
            else:
                invalid.append((number, f"a line with {row.actual_columns} fields where the header has "
                                        f"{row.expected_columns}: {row.text[:80]!r}"))
            return "skip"

        reader = pyarrow.csv.open_csv(path, read_options=pyarrow.csv.ReadOptions(use_threads=False),
                                      parse_options=csv_parse_options(note))
        number, held = 0, None
        for record_batch in reader:
            if held is not None:
                yield held
            # The reader parses a block ahead: the skipped rows noted so far may lie in the next block.
            skipped = {n for n, _ in invalid}
            numbers = []
            while len(numbers) < record_batch.num_rows:  # the readable rows' numbers: those not skipped
                number += 1
                if number not in skipped:
                    numbers.append(number)
            here = [(n, why) for n, why in invalid if n is None or n <= number]
            invalid[:] = [(n, why) for n, why in invalid if n is not None and n > number]
            held = {c: record_batch.column(c).to_pylist() for c in columns}, numbers, here
        # The last chunk takes the unreadable rows after its last readable one (an unclosed quote runs to the end).
        chunk, numbers, here = held if held is not None else ({c: [] for c in columns}, [], [])
        if held is not None or invalid:
            yield chunk, numbers, here + invalid
    else:
        rows: list[dict] = []
        numbers: list[int] = []
        invalid = []
        with open(path, encoding="utf-8-sig", errors="replace") as lines:  # a byte-order mark is not text
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                obj = json_object(line)
                if obj is None:
                    invalid.append((number, f"line {number} is not a JSON object: {line.strip()[:80]!r}"))
                    continue
                rows.append(obj)
                numbers.append(number)
                if len(rows) == _TABLE_CHUNK:
                    yield {c: [row.get(c) for row in rows] for c in columns}, numbers, invalid
                    rows, numbers, invalid = [], [], []
        if rows or invalid:
            yield {c: [row.get(c) for row in rows] for c in columns}, numbers, invalid


def check_table_batch(batch: dict, *, modality: str, settings: Any, fmt: str, value_column: str, label_column: str,
                      label_index: dict[str, int] | None, stop_at_first: bool,
                      limits: Any = None) -> Iterator[dict[str, list[str]]]:
    """Ray Data UDF over table file names: one summary row per chunk of rows, bad rows in file order with their numbers."""
    for path in batch["path"]:
        for chunk, numbers, invalid in _table_chunks(path, fmt, [value_column, label_column]):
            counts, bad = Counter(), []
            for row, value, raw_label in zip(numbers, chunk[value_column], chunk[label_column]):
                label = label_text(raw_label)
                reason = acceptance_problem(modality, value, label, settings, label_index, limits)
                if reason:
                    bad.append({"file": path, "row": row, "label": label, "reason": reason})
                else:
                    counts[label] += 1
            bad += [{"file": path, "row": row, "label": "", "reason": reason} for row, reason in invalid]
            bad.sort(key=lambda b: b["row"] if b["row"] is not None else float("inf"))
            yield _summary(counts, bad, len(numbers) + len(invalid))
            if bad and stop_at_first:
                return


def table_columns(path: str, fmt: str) -> list[str]:
    if fmt == "parquet":
        import pyarrow.parquet

        return list(pyarrow.parquet.read_schema(path).names)
    if fmt == "csv":
        import pyarrow.csv

        return list(pyarrow.csv.open_csv(path, parse_options=csv_parse_options()).schema.names)
    with open(path, encoding="utf-8-sig") as f:  # a byte-order mark (Windows editors) is no part of the object
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


def check_layout(cfg: RaylmConfig) -> None:
    """Before Ray starts, for a local ``data.path`` (and ``data.validation_path``): a format the modality
    reads, and every table file with the columns. Both were refused only after Ray's start (15-40 s on a
    small machine) with a run directory made for nothing; the full check still runs in the run."""
    from raylm.data.files import detect_format
    from raylm.data.sources import table_files
    from raylm.storage import StoragePath, StorageURIError

    record = modality_record(cfg.task.modality)
    for key, path, declared in (("data.path", cfg.data.path, cfg.data.format),
                                ("data.validation_path", cfg.data.validation_path, "auto")):
        if path is not None and "://" in path:  # a bucket that is not there, or a store that does not answer
            try:
                StoragePath.of(path).check_reachable()
            except StorageURIError as err:
                raise DataError(f"{key}: {err}") from None
            continue
        if path is None:
            continue
        fmt = detect_format(path, declared)
        if fmt == "folder":
            if not record.extensions:
                raise DataError(f"data.format: {cfg.task.modality} data must be csv, jsonl or parquet, not a folder "
                                f"({path})")
            _require_two_classes(key, path, record.extensions)
            continue
        for file in table_files(path, fmt):
            _require_columns(file, fmt, {record.value_column_key: record.value_column(cfg),
                                         "data.label_column": cfg.data.label_column})


def _require_two_classes(key: str, root: str, extensions: tuple[str, ...]) -> None:
    """A class folder's first two classes with a file of the modality each (the layout rule of
    ``data.files.scan_class_folder``), found without listing the whole folder: an empty folder, or one of
    files of another kind, is refused before Ray starts."""
    classes = 0
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if any(name.lower().endswith(extensions) and not name.startswith(".")
               for _, _, names in os.walk(entry.path) for name in names):
            classes += 1
            if classes == 2:
                return
    raise DataError(f"{key}: {root} must hold at least 2 class folders of {'/'.join(extensions)} files "
                    f"(found {classes} with such files)")


def _plan(cfg: RaylmConfig, source: DataSource) -> list[dict[str, Any]]:
    """Per split root of the resolved source: its files and what the layout rule ignores; every
    table file must have the columns (Ray Data would stop at the first one without)."""
    record = modality_record(cfg.task.modality)
    plan = []
    for split, root in source.roots.items():
        entry = {"split": split, "root": root.root, "format": root.format, "files": list(root.files),
                 "ignored": list(root.ignored)}
        if root.format != "folder":
            value_column = record.value_column(cfg)
            for file in root.files:
                _require_columns(file, root.format, {record.value_column_key: value_column,
                                                     "data.label_column": cfg.data.label_column})
            entry["value_column"] = value_column
        plan.append(entry)
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
    identity = {"format": FORMAT, "rules": RULES, "modality": cfg.task.modality, "labels": cfg.task.labels,
                "settings": modality_record(cfg.task.modality).settings(cfg).model_dump(),
                "limits": cfg.data.limits.model_dump(mode="json"),
                "columns": [cfg.data.text.text_column, cfg.data.image_column, cfg.data.audio_column, cfg.data.label_column],
                "splits": [(e["split"], e["root"], e["format"], fingerprint(e["files"])) for e in plan]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


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


_ANNOUNCED: set[str] = set()  # the checks (cache keys) whose count this process printed with no raylm console


def check_data(cfg: RaylmConfig, source: str | DataSource, fmt: str | None = None, *, report_dir: Path | None,
               enforce_policy: bool = True) -> dict[str, Any]:
    """Check ``source`` (and ``data.validation_path``) once; reuse the outcome while the files and
    acceptance settings are unchanged (Tune trials over the same data do not repeat it). Writes
    ``<report_dir>/data_report.json``, prints a one-line count, and raises DataError when the data
    is refused (``fail`` and a bad sample, or more bad than ``data.max_bad_fraction``).

    ``source``: the run's resolved :class:`DataSource`; a path (``raylm data check``) is resolved here
    with format ``fmt``."""
    if not isinstance(source, DataSource):
        from raylm.data.sources import resolve

        source = resolve(cfg.override({"data.path": source, "data.format": fmt or "auto"}),
                         extensions=modality_record(cfg.task.modality).extensions)
    plan = _plan(cfg, source)
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
    # Said once per command: a pipeline's sweep, compress attempts, evaluate and serve each check the same
    # files (the user saw the line 8 times). Under raylm's console the lines said live on its log handler
    # (a new one per command); without one, for this process.
    console = next((h for h in logging.getLogger("raylm").handlers if getattr(h, "raylm_console", False)), None)
    said = console.__dict__.setdefault("raylm_said", set()) if console is not None else _ANNOUNCED
    if cached.name in said:
        log.debug(summary)
    elif console is not None:
        # Under raylm's console (`raylm train`/`tune`) stderr is <run>/logs/ray.log; its handler shows warnings.
        log.log(logging.WARNING if report["bad_count"] or report["ignored"] else logging.INFO, summary)
    else:
        print(summary, file=sys.stderr, flush=True)
    said.add(cached.name)
    if enforce_policy:
        enforce(report, cfg, where)
    return report
