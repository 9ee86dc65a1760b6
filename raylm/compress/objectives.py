"""The measurements a sweep optimizes and the pipeline reports, the same for both backends."""

from __future__ import annotations

from pathlib import Path

from raylm.config import RaylmConfig
from raylm.records import CompressReport, Objectives


def compress_checkpoint(cfg: RaylmConfig, checkpoint: str | Path, *, verbose: bool = False) -> CompressReport:
    """Compress ``checkpoint`` as ``cfg.compress`` says with its backend's tools (torch: ONNX Runtime;
    keras: tfmot + TFLite); the report has one schema for both (dense, compressed, parity, ratios).
    A checkpoint URI is read through the local cache; with URI storage the artifact is written in the
    run's workspace and committed to storage (``raylm.storage``)."""
    from raylm.storage import localize, run_workspace

    checkpoint = localize(checkpoint, cfg.train.storage_options, require_commit=False)
    with run_workspace(cfg.run_location):
        if cfg.model.backend == "keras":
            from raylm.compress.keras import compress_keras_checkpoint

            return CompressReport.model_validate(compress_keras_checkpoint(cfg, checkpoint).summary)
        from raylm.compress.pipeline import compress_report

        return compress_report(cfg, checkpoint, verbose=verbose)


def compress_and_measure(cfg: RaylmConfig, checkpoint: str | Path) -> Objectives:
    """The artifact of ``compress_checkpoint`` and its measured objectives: accuracy, size_mb,
    latency_ms (p50 at the serving batch size), beside the dense model's."""
    report = compress_checkpoint(cfg, checkpoint)
    batch = cfg.compress.serving_batch_size
    c, d, ratios = report.compressed, report.dense, report.ratios
    return Objectives(accuracy=c.accuracy, size_mb=c.file_bytes / 1e6, latency_ms=c.p50_ms(batch), latency_batch_size=batch,
                      artifact=report.artifact, variant=report.variant,
                      # The dense model of the same training on its backend's fp32 runtime (ONNX Runtime, TFLite), measured beside it.
                      dense_accuracy=d.accuracy, dense_size_mb=d.file_bytes / 1e6, dense_latency_ms=d.p50_ms(batch),
                      dense_runtime=d.runtime, accuracy_drop_pts=ratios.accuracy_drop_pts, size_ratio=ratios.size_ratio,
                      latency_ratio=ratios.latency_ratio, gain=ratios.gain.passed, gain_reason=ratios.gain.reason)
