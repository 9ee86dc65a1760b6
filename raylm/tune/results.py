"""What a sweep leaves behind: one row per trial, the Pareto front, the table, CSV/JSON, the plot,
and exported artifacts."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from raylm.atomic import atomic_directory, atomic_write_text
from raylm.config import OBJECTIVE_MODES, ConfigError
from raylm.records.sweep import DENSE_RECIPE, dense_row, with_dense_rows  # noqa: F401  (one place: the records)
from raylm.records import RecordError, SweepResults, SweepRow, parse_record

_STATUS_ORDER = {"completed": 0, "stopped": 1, "error": 2, "pending": 3}


def trial_rows(result_grid, space_paths: list[str]) -> list[dict[str, Any]]:
    """Flatten Tune's ResultGrid: ``completed`` trials were trained and compressed; ``stopped``
    ones were ended early by the scheduler; ``error`` ones raised (the message is kept)."""
    rows = []
    for r in result_grid:
        m = r.metrics or {}
        config = r.config or {}
        if r.error is not None:
            status = "error"
        elif m.get("compressed"):
            status = "completed"
        elif m:
            status = "stopped"
        else:
            status = "pending"
        row: dict[str, Any] = {
            "trial_id": m.get("trial_id") or Path(r.path).name, "status": status,
            "params": {p: config.get(p) for p in space_paths},
            "epochs": m.get("epochs", m.get("epoch")), "val_accuracy": m.get("val_accuracy"),
            "accuracy": m.get("accuracy"), "latency_ms": m.get("latency_ms"), "size_mb": m.get("size_mb"),
            "latency_batch_size": m.get("latency_batch_size"), "variant": m.get("variant"),
            "artifact": m.get("artifact"), "checkpoint": m.get("checkpoint"), "trial_dir": r.path,
            "time_s": m.get("time_total_s"), "kind": "compressed", "measured_on": m.get("measured_on"),
            "trial_latency_ms": m.get("trial_latency_ms"),  # the trial's own timing, where tune.measure_on is elsewhere
            **{k: m.get(k) for k in _DENSE_KEYS},
        }
        if r.error is not None:
            row["error"] = f"{type(r.error).__name__}: {str(r.error).strip().splitlines()[-1][:300]}"
        # Checked as a SweepRow where it is built (a mistyped key fails here, not in the report);
        # kept as the dict Tune's metrics are, as trials.json holds it.
        rows.append(SweepRow.model_validate(row).model_dump(mode="json", exclude_unset=True))
    rows.sort(key=lambda row: (_STATUS_ORDER[row["status"]], row["trial_id"]))
    return rows


_DENSE_KEYS = ("dense_accuracy", "dense_size_mb", "dense_latency_ms", "accuracy_drop_pts", "size_ratio",
               "latency_ratio", "gain", "gain_reason")
def candidates(rows: list[dict[str, Any]], max_accuracy_drop: float | None = None) -> list[dict[str, Any]]:
    """What a sweep may choose from: each completed trial's dense model, and its compressed model
    where that passed the gain gate (and, given a budget, lost at most ``max_accuracy_drop`` points
    against its own dense model). A trial measured without a dense reference counts as before."""
    out = []
    for r in rows:
        if r["status"] != "completed":
            continue
        if r.get("dense_accuracy") is None:
            out.append(r)
            continue
        out.append(dense_row(r))
        if r.get("gain") and (max_accuracy_drop is None or r["accuracy_drop_pts"] <= max_accuracy_drop):
            out.append(r)
    return out


def _dominates(a: dict, b: dict, objectives: list[str]) -> bool:
    better = False
    for name in objectives:
        sign = 1 if OBJECTIVE_MODES[name] == "max" else -1
        diff = sign * (a[name] - b[name])
        if diff < 0:
            return False
        better |= diff > 0
    return better


def hardware_key(record: dict[str, Any] | None) -> tuple | None:
    """What makes two latencies comparable: the same CPU model, core count and device (node ids
    differ between identical machines; ``None`` for rows recorded before ``measured_on``)."""
    if not record:
        return None
    return record.get("cpu"), record.get("logical_cpus"), record.get("device")


def describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "unrecorded hardware"
    return f"{record.get('cpu')} x{record.get('logical_cpus')} {record.get('device')} ({record.get('node_ip')})"


class MixedHardwareError(ConfigError):
    """Latencies taken on different hardware were about to be ranked against each other."""


def by_hardware(rows: list[dict[str, Any]]) -> dict[tuple | None, list[dict[str, Any]]]:
    """Rows grouped by the hardware their latency was measured on (``measured_on``)."""
    groups: dict[tuple | None, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(hardware_key(r.get("measured_on")), []).append(r)
    return groups


def _one_hardware(done: list[dict[str, Any]], objectives: list[str]) -> None:
    """Refuse to rank on latency across hardware: it would rank machines, not models."""
    if "latency_ms" not in objectives:
        return
    groups = by_hardware(done)
    if len(groups) > 1:
        seen = "; ".join(f"{len({r['trial_id'] for r in g})} candidate(s) on {describe(g[0].get('measured_on'))}"
                         for g in groups.values())
        raise MixedHardwareError(
            f"tune.measure_on: the sweep's latencies were measured on {len(groups)} kinds of hardware ({seen}); "
            "a front ranking them would rank machines, not models. trials.json keeps a front per hardware; "
            "sweep again with tune.measure_on=driver or a custom resource, or drop latency_ms from tune.objectives")


def pareto_front(rows: list[dict[str, Any]], objectives: list[str]) -> list[dict[str, Any]]:
    """The candidates (see ``candidates``: dense models and compressed ones that gain) that no other
    candidate dominates (on every objective at least as good, on one strictly better). With one
    objective: the candidates tied for the best value. Refuses (``MixedHardwareError``) latencies
    measured on different hardware."""
    done = candidates(rows)
    _one_hardware(done, objectives)
    return [r for r in done if not any(_dominates(o, r, objectives) for o in done if o is not r)]


def fronts_by_hardware(rows: list[dict[str, Any]], objectives: list[str]) -> list[dict[str, Any]]:
    """One Pareto front per hardware the latencies were measured on, together (never compared)."""
    return [member for group in by_hardware(rows).values() for member in pareto_front(group, objectives)]


def best_row(rows: list[dict[str, Any]], objectives: list[str]) -> dict[str, Any] | None:
    """The candidate best on the first objective, ties broken by the next ones (never latencies of
    different hardware: ``MixedHardwareError``)."""
    done = candidates(rows)
    _one_hardware(done, objectives)
    if not done:
        return None
    return max(done, key=lambda r: tuple(r[o] if OBJECTIVE_MODES[o] == "max" else -r[o] for o in objectives))


def _short(path: str) -> str:
    return ".".join(path.split(".")[-2:])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict[str, Any]], front: list[dict[str, Any]], best: dict[str, Any] | None) -> str:
    params = list(rows[0]["params"]) if rows else []
    header = ["trial", *(_short(p) for p in params), "status", "epochs", "val_acc", "accuracy", "MB", "p50 ms",
              "vs dense", "pareto"]
    front_ids = {r["trial_id"] for r in front}
    best_id = best["trial_id"] if best is not None else None
    lines = []
    for r in with_dense_rows(rows):
        mark = ("*" if r["trial_id"] in front_ids else "") + (" best" if r["trial_id"] == best_id else "")
        versus = "-" if r.get("size_ratio") is None or r["kind"] == "dense" else (
            f"{-r['accuracy_drop_pts']:+.1f}pt {r['size_ratio']:.2f}x {r['latency_ratio']:.2f}x"
            + ("" if r.get("gain") else " no gain"))
        lines.append([r["trial_id"], *(_cell(r["params"].get(p)) for p in params), r["status"], _cell(r["epochs"]),
                      _cell(r["val_accuracy"]), _cell(r["accuracy"]), _cell(r["size_mb"]), _cell(r["latency_ms"]),
                      versus, mark.strip()])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *lines])


def sweep_table(tune_dir: Path) -> str:
    """The sweep's table from ``trials.json`` (what ``format_table`` prints to the log when quiet)."""
    path = Path(tune_dir) / "trials.json"
    try:
        saved = parse_record(SweepResults, json.loads(path.read_text()), str(path)).to_json()
    except (OSError, ValueError, RecordError):
        return ""
    rows = saved["trials"]
    # The front and the best may be dense rows ("<trial>-dense"), which trials.json does not list as rows:
    # looked up among the rows the table prints, or no dense row was ever marked.
    printed = with_dense_rows(rows)
    front = [r for r in printed if r["trial_id"] in set(saved["pareto_front"])]
    best = next((r for r in printed if r["trial_id"] == saved["best"]), None)
    return format_table(rows, front, best) if rows else ""


def write_results(tune_dir: Path, rows: list[dict[str, Any]], front: list[dict[str, Any]],
                  best: dict[str, Any] | None, objectives: list[str]) -> dict[str, Path]:
    """``trials.csv`` (one line per candidate: each trial's compressed model and its dense one, params as
    columns), ``trials.json`` (the trials' rows, front, best)."""
    listed = with_dense_rows(rows)
    params = list(dict.fromkeys(k for r in listed for k in r["params"]))  # a dense row's recipe keys too
    front_ids = {r["trial_id"] for r in front}
    fields = ["trial_id", "kind", *params, "status", "epochs", "val_accuracy", "accuracy", "latency_ms", "size_mb",
              *_DENSE_KEYS, "pareto", "measured_on", "artifact", "error"]
    buffer = []
    # One line per candidate, as the table prints them: a trial's compressed model and its dense one
    # (<trial>-dense), which may be on the front or the best (it had no line: the best was not in the file).
    for r in listed:
        buffer.append({**{k: r.get(k) for k in fields if k not in params}, **r["params"],
                       "pareto": r["trial_id"] in front_ids,
                       "measured_on": describe(r["measured_on"]) if r.get("measured_on") else None})
    csv_path, json_path = tune_dir / "trials.csv", tune_dir / "trials.json"
    with tempfile.NamedTemporaryFile("w", dir=tune_dir, delete=False, newline="", suffix=".csv") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(buffer)
    os.replace(f.name, csv_path)
    results = SweepResults(objectives={o: OBJECTIVE_MODES[o] for o in objectives}, trials=rows,
                           pareto_front=[r["trial_id"] for r in front], best=best["trial_id"] if best else None)
    atomic_write_text(json_path, json.dumps(results.to_json(), indent=2, default=str))
    return {"csv": csv_path, "json": json_path}


def plot_front(path: Path, rows: list[dict[str, Any]], front: list[dict[str, Any]]) -> Path | None:
    """Accuracy vs p50 latency, marker area by size, the front drawn as a step line."""
    done = [r for r in rows if r["status"] == "completed"]
    if not done:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    sizes = [r["size_mb"] for r in done]
    biggest = max(sizes) or 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r["latency_ms"] for r in done], [r["accuracy"] for r in done],
               s=[40 + 400 * s / biggest for s in sizes], alpha=0.5, label="trial (area: size on disk)")
    dense = [dense_row(r) for r in done if r.get("dense_accuracy") is not None]
    if dense:
        ax.scatter([r["latency_ms"] for r in dense], [r["accuracy"] for r in dense], marker="s", color="k",
                   s=[40 + 400 * r["size_mb"] / max(biggest, r["size_mb"]) for r in dense], alpha=0.35,
                   label="dense reference (fp32 ONNX Runtime)")
    if front:
        pts = sorted((r["latency_ms"], r["accuracy"]) for r in front)
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="C3", label="Pareto front")
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="C3", s=20, zorder=3)
    for r in done:
        ax.annotate(r["trial_id"], (r["latency_ms"], r["accuracy"]), fontsize=7, alpha=0.7)
    batch = done[0].get("latency_batch_size")
    ax.set_xlabel(f"p50 latency (ms, batch {batch})")
    ax.set_ylabel("validation accuracy (from the exported file)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _dense_artifact(checkpoint: str, options: dict[str, Any] | None = None) -> str:
    """A trial's dense model exported as serving loads it (fp32 ONNX), made when a front member needs it.
    With URI storage it is written in the trial's workspace and committed beside the trial's own artifact."""
    from raylm.compress.pipeline import compress, compress_config
    from raylm.storage import localize, public_paths, run_workspace

    local = localize(checkpoint, options, require_commit=False)
    cfg = compress_config(local, None, [f"{k}={v}" for k, v in DENSE_RECIPE.items()] + ["compress.variant=dense"])
    with run_workspace(cfg.run_location):
        return public_paths(compress(cfg, local, verbose=False))["artifact"]


def export_artifacts(run_dir: Path, rows: list[dict[str, Any]], front: list[dict[str, Any]],
                     best: dict[str, Any] | None, mode: str, *, options: dict[str, Any] | None = None) -> dict[str, Path]:
    """Copy the chosen trials' artifacts to ``<run_dir>/compress/`` (where ``raylm serve`` and the
    pipeline look): ``tune-best``, or ``pareto-1..n`` (front members, most accurate first). A trial's
    artifact is read where the trial committed it (a URI: through the verified local cache), never
    from the trial's node; ``options``: the storage's ``train.storage_options``."""
    from raylm.artifacts import read_meta, write_meta
    from raylm.storage import localize

    if mode == "none":
        return {}
    chosen = [("tune-best", best)] if mode == "best" else [
        (f"pareto-{i}", r) for i, r in enumerate(sorted(front, key=lambda r: -r["accuracy"]), 1)]
    out = {}
    for name, row in chosen:
        if row is not None and row.get("kind") == "dense" and not row.get("artifact"):
            row = row | {"artifact": _dense_artifact(row["checkpoint"], options)}
        if row is None or not row.get("artifact"):
            continue
        source = localize(row["artifact"], options)
        with atomic_directory(run_dir / "compress" / name) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            (tmp / "tune_trial.json").write_text(json.dumps(row, indent=2, default=str))
            write_meta(tmp, read_meta(tmp))  # list (and hash) the added record: loaders refuse unlisted files
        out[name] = run_dir / "compress" / name
    return out
