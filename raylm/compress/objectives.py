"""The measurements a sweep optimizes and the pipeline reports, the same for both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raylm.config import RaylmConfig


def compress_and_measure(cfg: RaylmConfig, checkpoint: Path) -> dict[str, Any]:
    """Compress ``checkpoint`` as ``cfg.compress`` says (torch or Keras backend); the artifact and its
    measured objectives: accuracy, size_mb, latency_ms (p50 at the serving batch size)."""
    if cfg.model.backend == "keras":
        from raylm.compress.keras import compress_keras_checkpoint

        from raylm.compress.gate import gain_verdict

        cc = cfg.compress
        result = compress_keras_checkpoint(cfg, checkpoint, latency_runs=cc.latency_runs)
        row, dense = result.report[-1], result.report[0]  # the first row is the dense float TFLite model
        gain = gain_verdict(row["size_ratio"], row["latency_ratio"], min_size_gain=cc.min_size_gain,
                            min_speedup=cc.min_speedup, tolerance=cc.gain_tolerance)
        return {"accuracy": row["accuracy"], "size_mb": row["size_bytes"] / 1e6,
                "latency_ms": row["latency_ms_batch1"]["p50"], "latency_batch_size": 1,
                "artifact": str(result.artifact), "variant": row["variant"],
                "dense_accuracy": dense["accuracy"], "dense_size_mb": dense["size_bytes"] / 1e6,
                "dense_latency_ms": dense["latency_ms_batch1"]["p50"],
                "accuracy_drop_pts": round((dense["accuracy"] - row["accuracy"]) * 100, 3),
                "size_ratio": row["size_ratio"], "latency_ratio": row["latency_ratio"],
                "gain": gain["passed"] and row is not dense, "gain_reason": gain["reason"]}
    from raylm.compress import compress

    report = compress(cfg, checkpoint, verbose=False)
    batch = cfg.compress.serving_batch_size
    c, d, ratios = report["compressed"], report["dense"], report["ratios"]
    return {"accuracy": c["accuracy"], "size_mb": c["file_bytes"] / 1e6,
            "latency_ms": c["latency"][f"batch_{batch}"]["p50_ms"], "latency_batch_size": batch,
            "artifact": report["artifact"], "variant": report["variant"],
            # The dense model of the same training on fp32 ONNX Runtime, measured beside it.
            "dense_accuracy": d["accuracy"], "dense_size_mb": d["file_bytes"] / 1e6,
            "dense_latency_ms": d["latency"][f"batch_{batch}"]["p50_ms"],
            "accuracy_drop_pts": ratios["accuracy_drop_pts"], "size_ratio": ratios["size_ratio"],
            "latency_ratio": ratios["latency_ratio"], "gain": ratios["gain"]["passed"],
            "gain_reason": ratios["gain"]["reason"]}
