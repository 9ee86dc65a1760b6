"""``tune.measure_on``: one place measures every trial's latency, so a sweep's rows compare.

A trial compresses and measures where Tune put it; on a cluster that is a CPU head for one trial
and a GPU node for the next, and a front ranking those latencies ranks machines, not models. With
``tune.measure_on: driver`` or ``<custom resource>`` (``auto``, the default, picks driver on a cluster
that spans or can grow to several nodes, else trial), the sweep starts one
:class:`LatencyProbe` actor pinned there (the driver's node; a node that has the resource); each
trial hands it the exported artifact, its dense checkpoint and one batch of validation rows, and
the probe times the two in alternation, one trial at a time. ``trial`` keeps the old behaviour.
Either way each row records the hardware it was measured on (:func:`hardware`), and
``raylm.tune.results`` refuses to rank latencies taken on different hardware.
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray

from raylm.config import ConfigError, RaylmConfig

PROBE_START_S = 120  # a probe waiting longer than this for its node is refused, naming the key


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(place: str) -> dict[str, Any]:
    """Where this process measures: the Ray node, its CPU, the device the runtimes use (CPU:
    artifacts load on CPU, ``raylm.artifacts.load_artifact``)."""
    context = ray.get_runtime_context()
    return {"place": place, "node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "device": "cpu"}


def _dense_predictor(cfg: RaylmConfig, checkpoint: str, feeds: dict[str, np.ndarray], scratch: Path):
    """The trial's dense model on its backend's fp32 runtime, as compress measured it: ONNX Runtime
    (torch) or float TFLite (Keras)."""
    threads = cfg.compress.latency_threads
    if cfg.model.backend == "keras":
        from raylm.artifacts.tflite_runtime import TFLiteRunner
        from raylm.compress.methods import exporter
        from raylm.train.keras_loop import load_keras_checkpoint

        path = scratch / "dense.tflite"
        path.write_bytes(exporter(cfg.compress, "keras").write(load_keras_checkpoint(checkpoint).model))
        runner, (feature,) = TFLiteRunner(path, threads), list(feeds)
        return lambda batch: runner(batch[feature])
    from raylm.artifacts.onnx_runtime import onnx_predictor
    from raylm.compress.quantize import export_onnx
    from raylm.train.checkpoint import load_checkpoint

    example = {name: value[:2] for name, value in feeds.items()}
    return onnx_predictor(export_onnx(load_checkpoint(checkpoint).model, example, scratch / "dense.onnx"), threads)


@ray.remote(num_cpus=0, max_concurrency=1)
class LatencyProbe:
    """Times trials' models on one node, one at a time (``max_concurrency=1``: two trials' timings
    never overlap here). Holds no CPUs: a head started with ``num-cpus: 0`` can host it."""

    def __init__(self, place: str):
        self._where = hardware(place)

    def where(self) -> dict[str, Any]:
        return self._where

    def measure(self, cfg: RaylmConfig, artifact: str, checkpoint: str, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        from raylm.artifacts import load_artifact
        from raylm.compress.measure import paired_p50

        from raylm.storage import localize

        compression = cfg.compress
        # With URI storage the trial published both before asking: read them from storage (the local cache).
        options = cfg.train.storage_options
        artifact, checkpoint = str(localize(artifact, options)), str(localize(checkpoint, options, require_commit=False))
        previous = torch.get_num_threads()
        torch.set_num_threads(compression.latency_threads)  # as compress measures: torch runtimes too
        try:
            with tempfile.TemporaryDirectory(prefix="raylm-probe-") as scratch:
                dense = _dense_predictor(cfg, checkpoint, feeds, Path(scratch))
                candidate = load_artifact(artifact, threads=compression.latency_threads).predict
                latency_ms, dense_ms = paired_p50(candidate, dense, feeds, compression.latency_runs, compression.latency_warmup)
        finally:
            torch.set_num_threads(previous)
        return {"latency_ms": latency_ms, "dense_latency_ms": dense_ms, "measured_on": self._where}


def start_probe(cfg: RaylmConfig):
    """The sweep's probe where ``tune.measure_on`` says (None for ``trial``); refuses, naming the key,
    a resource no node has or a probe that never starts."""
    from ray.exceptions import GetTimeoutError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    place = cfg.tune.measure_on
    if place == "auto":
        # One node that cannot grow: every trial lands on the driver's hardware, so timing in the
        # trial compares as well as the probe would, without the probe's per-trial round trip
        # (~4 s per tiny trial on 2 cores, benchmarks/measure_on.py).
        from raylm.capacity import read_capacity

        place = "driver" if read_capacity().multi_node else "trial"
    if place == "trial":
        return None
    if place == "driver":
        options: dict[str, Any] = {"scheduling_strategy": NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)}
    else:
        if ray.cluster_resources().get(place, 0) <= 0:
            raise ConfigError(f"tune.measure_on={place}: no node has a resource named {place!r} (the cluster has "
                              f"{sorted(ray.cluster_resources())}); use driver, trial or one of those")
        options = {"resources": {place: 0.01}}
    probe = LatencyProbe.options(**options).remote(place)
    try:
        ray.get(probe.where.remote(), timeout=PROBE_START_S)
    except GetTimeoutError:
        ray.kill(probe)
        raise ConfigError(f"tune.measure_on={place}: the latency probe did not start within {PROBE_START_S} s "
                          "(no node there has room)") from None
    return probe


def measure_trial(probe, cfg: RaylmConfig, measured: dict[str, Any], checkpoint: str) -> dict[str, Any]:
    """``measured`` (compress_and_measure's objectives, timed in the trial) with the latencies of the
    probe's place and the record of where they were taken. Call inside the trial's data sharing:
    the batch is read from the trial's validation split."""
    if probe is None:
        return measured | {"measured_on": hardware("trial")}
    from raylm.compress.measure import batch_of, collect
    from raylm.data import MODEL_INPUTS, build_datasets

    inputs = MODEL_INPUTS[cfg.task.modality]
    batch = cfg.compress.serving_batch_size
    rows = collect(build_datasets(cfg).validation, inputs, limit=batch)
    probed = ray.get(probe.measure.remote(cfg, measured["artifact"], checkpoint, batch_of(rows, inputs, batch)))
    # The gain gate's latency_ratio stays the trial's paired ratio: the verdict was taken on it.
    return measured | probed | {"trial_latency_ms": measured["latency_ms"]}
