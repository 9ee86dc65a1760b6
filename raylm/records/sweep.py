"""A sweep's rows (one per trial, and each trial's dense model as a candidate of its own) and
``<run>/tune/trials.json`` (written by ``raylm.tune.results.write_results``)."""

from __future__ import annotations

from typing import Any, Literal

from raylm.records.base import ParamValue, Record, VersionedRecord


class MeasuredOn(Record):
    """The hardware a latency was measured on (``raylm.tune.measure_on.hardware``)."""

    place: str | None = None
    node_id: str | None = None
    node_ip: str | None = None
    cpu: str | None = None
    logical_cpus: int | None = None
    device: str | None = None


class SweepRow(Record):
    """One trial as Tune left it (``trial_rows``), or its dense model (``dense_row``)."""

    trial_id: str
    status: Literal["completed", "stopped", "error", "pending"]
    params: dict[str, ParamValue]
    epochs: int | None = None
    val_accuracy: float | None = None
    accuracy: float | None = None
    latency_ms: float | None = None
    size_mb: float | None = None
    latency_batch_size: int | None = None
    variant: str | None = None
    artifact: str | None = None
    checkpoint: str | None = None
    trial_dir: str | None = None
    time_s: float | None = None
    kind: Literal["compressed", "dense"] = "compressed"
    measured_on: MeasuredOn | None = None
    trial_latency_ms: float | None = None
    dense_accuracy: float | None = None
    dense_size_mb: float | None = None
    dense_latency_ms: float | None = None
    accuracy_drop_pts: float | None = None
    size_ratio: float | None = None
    latency_ratio: float | None = None
    gain: bool | None = None
    gain_reason: str | None = None
    error: str | None = None


class SweepResults(VersionedRecord):
    """``trials.json``: the objectives and their directions, every row, the front's and the best's ids."""

    objectives: dict[str, Literal["max", "min"]]
    trials: list[SweepRow]
    pareto_front: list[str]
    best: str | None = None

    def _dump(self) -> dict[str, object]:
        # A row's unset optional fields stay as written before (``error`` only on failed trials).
        out = self.model_dump(mode="json")
        out["trials"] = [row.model_dump(mode="json", exclude_unset=True) for row in self.trials]
        return out


# What makes a trial's recipe the dense model: no pruning, no quantization.
DENSE_RECIPE = {"compress.distill.method": "none", "compress.prune.method": "none", "compress.quantize.mode": "none"}


def dense_row(row: dict[str, Any]) -> dict[str, Any]:
    """The trial's own dense model (fp32 ONNX Runtime) as a candidate of its own."""
    params = {k: v for k, v in row["params"].items() if not k.startswith("compress.")} | DENSE_RECIPE
    return {**row, "trial_id": f"{row['trial_id']}-dense", "kind": "dense", "params": params,
            "accuracy": row["dense_accuracy"], "size_mb": row["dense_size_mb"], "latency_ms": row["dense_latency_ms"],
            "accuracy_drop_pts": 0.0, "size_ratio": 1.0, "latency_ratio": 1.0, "gain": None,
            "gain_reason": "dense reference", "artifact": None, "variant": "dense"}


def with_dense_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials' rows and, after them, each completed trial's dense model as a row of its own
    (``<trial>-dense``): the candidates the table prints, the front and the best may name, ``trials.csv``
    lists and the report shows. ``trials.json`` keeps the trials only (its dense columns give the rest)."""
    return rows + [dense_row(r) for r in rows if r["status"] == "completed" and r.get("dense_accuracy") is not None]
