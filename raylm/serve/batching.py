"""How a replica batches: the batch size and wait chosen from an artifact's own measured latency curve."""

from __future__ import annotations

import math
from typing import Any

from raylm.config import ServeConfig

# Batching must save at least this share of the per-row model time to be worth a wait.
MIN_BATCH_GAIN = 1.25


def choose_batching(meta: dict[str, Any], cfg: ServeConfig) -> tuple[int, float, str]:
    """``(max_batch_size, batch_wait_timeout_s, why)`` from the artifact's measured latency curve (its report's
    p50 at batch 1 and at the largest batch measured); values set in ``serve.*`` win.

    Batching pays when rows per second at batch B beat batch 1 by MIN_BATCH_GAIN; then a batch may hold B rows
    and waits at most one batch-1 model call for them -- and only while other requests are on their way."""
    report = meta.get("report", {})
    latency = report.get("compressed", report).get("latency", {})  # compress's report: the variant's own numbers
    curve = {int(k.split("_", 1)[1]): v["p50_ms"] for k, v in latency.items() if k.startswith("batch_")}
    big = max(curve, default=1)
    if 1 not in curve or big == 1:
        size, wait, why = 16, 0.005, "no latency curve in the artifact's report: defaults"
    else:
        gain = big * curve[1] / curve[big]
        # A gain under the bar is shown rounded down: rounded, 1.2497 read "1.25x rows/s < 1.25x".
        shown = gain if gain >= MIN_BATCH_GAIN else math.floor(gain * 1000) / 1000
        why = (f"p50 {curve[1]:.2f} ms at batch 1, {curve[big]:.2f} ms at batch {big}: "
               f"{shown:.3f}x rows/s {'>=' if gain >= MIN_BATCH_GAIN else '<'} {MIN_BATCH_GAIN}x")
        size, wait = (big, round(curve[1] / 1000, 4)) if gain >= MIN_BATCH_GAIN else (1, 0.0)
    if cfg.max_batch_size is not None or cfg.batch_wait_timeout_s is not None:
        why += "; set in serve.*: " + ", ".join(f"{k}={getattr(cfg, k)}" for k in ("max_batch_size", "batch_wait_timeout_s")
                                             if getattr(cfg, k) is not None)
    size = cfg.max_batch_size if cfg.max_batch_size is not None else size
    wait = cfg.batch_wait_timeout_s if cfg.batch_wait_timeout_s is not None else wait
    return size, wait, why
