"""The compress report (``raylm compress``; ``report`` in the artifact's ``artifact.json``), its
measurements, and the objectives a sweep trial and the pipeline's compress stage read from it."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict, model_serializer

from raylm.records.base import Record, VersionedRecord


class Latency(Record):
    p50_ms: float
    p95_ms: float


class Measurement(Record):
    """One model variant measured on the validation rows (``raylm.compress.measure.measure``), plus
    what the runtime adds (torch path: runtime, agreement with dense; keras path: TFLite input dtype,
    agreement with the Keras model, the variant's name in ``variants``)."""

    variant: str | None = None
    accuracy: float
    samples: int
    params: int
    nonzero_params: int
    sparsity: float
    overall_sparsity: float
    file_bytes: int
    gzip_bytes: int
    latency: dict[str, Latency]  # batch_<n>
    threads: int
    agreement_with_dense: float | None = None
    runtime: str | None = None
    input_dtype: str | None = None
    agreement_with_keras: float | None = None

    def p50_ms(self, batch_size: int) -> float:
        return self.latency[f"batch_{batch_size}"].p50_ms


class _WithExtras(Record):
    """A record whose writer adds keys of its own (per batch size, per exporter) after ``EXTRAS_AFTER``:
    written back in that order, as the file always had them."""

    model_config = ConfigDict(extra="allow")
    EXTRAS_AFTER: ClassVar[str]

    @model_serializer(mode="wrap")
    def _in_written_order(self, handler: Any) -> dict[str, object]:
        out = handler(self)
        extras = set(self.__pydantic_extra__ or {})
        ordered: dict[str, object] = {}
        for name, value in out.items():
            if name not in extras:
                ordered[name] = value
            if name == self.EXTRAS_AFTER:
                ordered |= {k: out[k] for k in out if k in extras}
        return ordered | {k: out[k] for k in out if k not in ordered}


class Gain(Record):
    passed: bool
    reason: str


class Ratios(_WithExtras):
    """The candidate against the dense model (``raylm.compress.gate.variant_ratios``); besides these,
    one ``latency_p50_ratio_b<n>`` per measured batch size."""

    EXTRAS_AFTER: ClassVar[str] = "nonzero_ratio"
    __pydantic_extra__: dict[str, int | float]

    accuracy_delta: float
    size_ratio: float
    gzip_size_ratio: float
    params_ratio: float
    nonzero_ratio: float
    accuracy_drop_pts: float
    latency_ratio: float
    latency_batch_size: int
    latency_ratio_timing: str  # paired | apart
    gain: Gain
    # The same alternation at batch 1 (a lone request), for the frontier (benchmarks/compression_frontier.py).
    paired_latency_ratio_b1: float | None = None


class Parity(_WithExtras):
    """The reloaded artifact against the in-memory model; besides these, the exporter's own numbers
    (``fp32_<export>_max_abs_diff``, ``sparse_tensors``)."""

    EXTRAS_AFTER: ClassVar[str] = "rows"
    __pydantic_extra__: dict[str, int | float]

    atol: float | None = None  # the keras path checks top-1 agreement, not a tolerance
    sparse_layout: str | None = None  # int8 weights stored as a bitmask (raylm/artifacts/sparse.py), when they are
    rows: int
    max_abs_diff: float
    top1_agreement: float
    passed: bool


class CompressReport(VersionedRecord):
    """What ``compress`` returns and stores in the artifact: the dense parent and the variant measured
    on the same rows, their ratios and the parity check (one schema for both backends)."""

    variant: str
    modality: str
    model: str
    artifact: str
    dense: Measurement
    compressed: Measurement
    parity: Parity
    ratios: Ratios
    variants: list[Measurement] | None = None  # keras: every intermediate variant, dense first

    def _dump(self) -> dict[str, object]:
        return self.model_dump(mode="json", exclude_none=True)


class Objectives(Record):
    """A compress report as a sweep and the pipeline rank it (``compress_and_measure``): the
    variant's accuracy, size and p50 at the serving batch size, beside its dense model's."""

    accuracy: float
    size_mb: float
    latency_ms: float
    latency_batch_size: int
    artifact: str
    variant: str
    dense_accuracy: float
    dense_size_mb: float
    dense_latency_ms: float
    dense_runtime: str
    accuracy_drop_pts: float
    size_ratio: float
    latency_ratio: float
    gain: bool
    gain_reason: str
