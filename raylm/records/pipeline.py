"""``<run>/pipeline.json``: what each pipeline stage produced (``raylm.pipeline``), read back on
re-entry (``--from``, a rerun), by the report and by ``raylm runs``."""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue, model_serializer

from raylm.records.base import ParamValue, Record, VersionedRecord
from raylm.records.compress import Objectives


class SweepMeasurement(Record):
    """What the sweep measured for the chosen candidate (a trial's row, its own or its dense model's)."""

    val_accuracy: float | None = None
    accuracy: float | None = None
    latency_ms: float | None = None
    size_mb: float | None = None
    dense_accuracy: float | None = None
    accuracy_drop_pts: float | None = None
    gain_reason: str | None = None


class Alternate(Record):
    trial_id: str
    params: dict[str, ParamValue]


class TuneStage(Record):
    tune_dir: str
    trials: int
    completed: int
    pareto_front: list[str]
    chosen: str
    params: dict[str, ParamValue]
    alternates: list[Alternate] = []
    sweep_measurement: SweepMeasurement
    seconds: float | None = None  # the stage's wall time, set when it ends


class TrainMetrics(Record):
    epoch: int | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    train_loss: float | None = None


class TrainStage(Record):
    checkpoint: str  # the best kept checkpoint: what compress starts from
    metrics: TrainMetrics  # the last epoch's
    seconds: float | None = None  # the stage's wall time, set when it ends
    best: TrainMetrics | None = None  # the checkpoint's own epoch (absent in records before stop 43)

    @model_serializer(mode="wrap")
    def _without_absent_best(self, handler: Any) -> dict[str, object]:
        out = handler(self)  # an older record written back stays as it was
        if out.get("best") is None:
            out.pop("best", None)
        return out


class DenseReference(Record):
    """The dense retrained model on its backend's fp32 runtime: what every attempt is judged against."""

    accuracy: float
    size_mb: float
    latency_ms: float
    runtime: str


class CompressAttempt(Record):
    tried_as: str
    recipe: str
    passed: bool
    why: str
    accuracy: float
    size_mb: float
    latency_ms: float
    accuracy_drop_pts: float
    size_ratio: float
    latency_ratio: float
    artifact: str


class CompressStage(Objectives):
    """The served attempt's objectives (``artifact``: the stable copy serving configs point at)."""

    recipe: str
    tried_as: str
    source_artifact: str
    dense: DenseReference
    attempts: list[CompressAttempt]
    seconds: float | None = None


class EvaluateStage(Record):
    artifact: str
    accuracy: float
    accuracy_drop_pts: float
    samples: int
    size_mb: float
    latency_ms: float
    labels: list[str]
    confusion: list[list[int]]
    seconds: float | None = None  # the stage's wall time, set when it ends


class SmokeRequest(Record):
    status: int
    expected: str
    predicted: str
    correct: bool
    latency_ms: float


class ServeStage(Record):
    url: str
    app: str
    smoke: SmokeRequest | str  # a string: why no request was sent
    seconds: float | None = None  # the stage's wall time, set when it ends


STAGE_RECORDS: dict[str, type[Record]] = {"tune": TuneStage, "train": TrainStage, "compress": CompressStage,
                                               "evaluate": EvaluateStage, "serve": ServeStage}


class Stages(Record):
    """The stages that ran, in order; a stage not (or no longer) valid is absent from the file."""

    tune: TuneStage | None = None
    train: TrainStage | None = None
    compress: CompressStage | None = None
    evaluate: EvaluateStage | None = None
    serve: ServeStage | None = None

    @model_serializer(mode="wrap")
    def _present(self, handler: Any) -> dict[str, object]:
        return {name: value for name, value in handler(self).items() if value is not None}

    def names(self) -> list[str]:
        """The recorded stages, in pipeline order."""
        return [name for name in STAGE_RECORDS if getattr(self, name) is not None]


class PipelineRecord(VersionedRecord):
    stages: Stages = Stages()
    config: dict[str, JsonValue] | None = None  # RaylmConfig.to_dict() of the run: a rerun of it re-enters
    run_dir: str | None = None  # where the run is stored: in what run_pipeline returns, not in the file

    def _dump(self) -> dict[str, object]:
        return self.model_dump(mode="json", exclude={"run_dir"})
