"""Measurements of one model variant: accuracy, size on disk, parameter counts, CPU latency."""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from raylm.records import Measurement

Predict = Callable[[dict[str, np.ndarray]], np.ndarray]  # feeds -> logits


def collect(dataset, columns: tuple[str, ...], limit: int = 0, batch_size: int = 256) -> dict[str, np.ndarray]:
    """The first ``limit`` rows (0: all) of a Ray Data dataset as numpy arrays on the driver.

    Validation splits of classifiers are small; holding one in memory lets every variant be
    measured on exactly the same rows.
    """
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    rows = 0
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        for c in columns:
            parts[c].append(batch[c])
        rows += len(batch[columns[0]])
        if limit and rows >= limit:
            break
    if rows == 0:
        raise ValueError("the dataset is empty: nothing to measure or calibrate with")
    out = {c: np.concatenate(v) for c, v in parts.items()}
    return {c: v[:limit] if limit else v for c, v in out.items()}


def take(data: dict[str, np.ndarray], inputs: tuple[str, ...], start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: data[name][start:stop] for name in inputs}


def predictions(predict: Predict, data: dict[str, np.ndarray], inputs: tuple[str, ...], batch_size: int = 64) -> np.ndarray:
    n = len(data[inputs[0]])
    return np.concatenate([predict(take(data, inputs, i, i + batch_size)).argmax(-1) for i in range(0, n, batch_size)])


def batch_of(data: dict[str, np.ndarray], inputs: tuple[str, ...], batch_size: int) -> dict[str, np.ndarray]:
    """``batch_size`` rows of ``inputs`` (rows repeated if too few), contiguous as a runtime wants them."""
    index = np.arange(batch_size) % len(data[inputs[0]])
    return {name: np.ascontiguousarray(data[name][index]) for name in inputs}


def latency(predict: Predict, data: dict[str, np.ndarray], inputs: tuple[str, ...], batch_size: int,
            runs: int, warmup: int) -> dict[str, float]:
    """p50/p95 milliseconds of one forward pass at ``batch_size`` (rows repeated if too few)."""
    feeds = batch_of(data, inputs, batch_size)
    for _ in range(warmup):
        predict(feeds)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        predict(feeds)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}


def paired_p50(candidate: Predict, reference: Predict, feeds: dict[str, np.ndarray], runs: int,
               warmup: int) -> tuple[float, float]:
    """Median milliseconds of ``candidate`` and of ``reference``, the two timed in alternation on ``feeds``.

    Measured one after the other, each model met different load (a sweep runs trials side by
    side): a pruned fp32 model, the dense graph once loaded, measured 0.77x-1.10x of dense.
    Alternating runs share the load, so the ratio is the models' own."""
    for _ in range(warmup):
        candidate(feeds), reference(feeds)
    times: dict[int, list[float]] = {0: [], 1: []}
    for i in range(runs):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):  # neither always goes first
            predict = candidate if which == 0 else reference
            started = time.perf_counter()
            predict(feeds)
            times[which].append(time.perf_counter() - started)
    return float(np.median(times[0]) * 1000), float(np.median(times[1]) * 1000)


def paired_latency_ratio(candidate: Predict, reference: Predict, data: dict[str, np.ndarray], inputs: tuple[str, ...],
                         batch_size: int, runs: int, warmup: int) -> float:
    """p50(candidate) / p50(reference), timed in alternation (``paired_p50``) on ``batch_size`` rows."""
    ms, reference_ms = paired_p50(candidate, reference, batch_of(data, inputs, batch_size), runs, warmup)
    return ms / reference_ms


def file_sizes(paths: list[Path]) -> dict[str, int]:
    """Bytes on disk and gzip bytes (zeros from unstructured pruning only pay off compressed)."""
    size = sum(os.path.getsize(p) for p in paths)
    gz = sum(len(gzip.compress(Path(p).read_bytes(), compresslevel=6)) for p in paths)
    return {"file_bytes": size, "gzip_bytes": gz}


def measure(predict: Predict, data: dict[str, np.ndarray], inputs: tuple[str, ...], *, files: list[Path],
            counts: dict[str, float], batch_sizes: tuple[int, ...], runs: int, warmup: int,
            threads: int) -> tuple[Measurement, np.ndarray]:
    """The report of one variant and its predictions. Latency runs with ``threads`` intra-op threads (set by the caller's
    predict for ONNX Runtime; here for torch) so torch and ORT are compared on equal footing."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        preds = predictions(predict, data, inputs)
        report = Measurement(
            accuracy=float((preds == data["label"]).mean()), samples=int(len(preds)), **counts, **file_sizes(files),
            latency={f"batch_{b}": latency(predict, data, inputs, b, runs, warmup) for b in batch_sizes},
            threads=threads)
    finally:
        torch.set_num_threads(previous)
    return report, preds


def format_table(rows: list[tuple[str, Measurement]], batch_sizes: tuple[int, ...]) -> str:
    cols = ["variant", "accuracy", "params", "nonzero", "MB", "gzip MB"] + [f"p50/p95 ms b{b}" for b in batch_sizes]
    lines = ["  ".join(f"{c:>16}" for c in cols)]
    for name, r in rows:
        cells = [name, f"{r.accuracy:.4f}", str(r.params), str(r.nonzero_params),
                 f"{r.file_bytes / 1e6:.3f}", f"{r.gzip_bytes / 1e6:.3f}"]
        cells += [f"{r.latency[f'batch_{b}'].p50_ms:.2f}/{r.latency[f'batch_{b}'].p95_ms:.2f}" for b in batch_sizes]
        lines.append("  ".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)
