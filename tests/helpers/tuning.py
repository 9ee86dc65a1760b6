"""Shared by the sweep tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Two learning rates: one learns the bars in an epoch, one stays at chance. In grid order with one
# trial at a time, ASHA has a good trial's rung-1 result to compare every weak one against.
_SWEEP = ["train.num_workers=1", "train.epochs=3", "compress.latency_runs=3", "compress.latency_warmup=1",
          "tune.max_concurrent_trials=1", "tune.trial_cpus=0.25"]


def _finished_trials(tune_dir: Path) -> set[str]:
    """Trials whose measured (final) result Tune's driver has logged: finished, as Tune sees it."""
    done = set()
    for log in tune_dir.glob("*/result.json"):
        for line in log.read_text().splitlines():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:  # the line being written right now
                continue
            if result.get("compressed"):
                done.add(result["trial_id"])
    return done


def interrupt_sweep_driver(config_path: Path, ready: Callable[[], bool], what: str, *, cwd: Path,
                           env: dict[str, str] | None = None, deadline_s: float = 300, poll_s: float = 0.2,
                           wait_s: float = 180) -> tuple[int, str]:
    """``raylm tune --config config_path`` as a second driver on the test's Ray (``RAY_ADDRESS``: the
    test's, unless ``env`` names one), Ctrl-C'd once ``ready()`` (polled every ``poll_s``, ``what`` names
    it in the timeout message). The driver is frozen (SIGSTOP) the moment it is ready, then sent SIGINT
    (tests/helpers/signals.py), so it starts no further trial before the signal. Its return code and stderr."""
    import ray

    from tests.helpers.signals import freeze, signal_frozen

    env = dict(os.environ if env is None else env)
    env.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    proc = subprocess.Popen([sys.executable, "-m", "raylm.cli", "tune", "--config", str(config_path)], cwd=cwd,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + deadline_s
        while not ready():
            assert proc.poll() is None, f"the sweep ended before {what}: " + proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(poll_s)
        freeze(proc)
        return signal_frozen(proc, signal.SIGINT, timeout_s=wait_s), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def brute_force_front(rows: list[dict], objectives: list[str]) -> set[tuple[str, str]]:
    """The non-dominated (trial_id, kind) points, computed here from the rows alone: each completed
    trial's dense model, and its compressed one where the trial's gain gate passed. Accuracy is
    maximised, every other objective (latency_ms, size_mb) minimised; every pair is compared."""
    points = []
    for r in rows:
        if r["status"] != "completed":
            continue
        points.append(((r["trial_id"], "dense"), {"accuracy": r["dense_accuracy"], "latency_ms": r["dense_latency_ms"],
                                                  "size_mb": r["dense_size_mb"]}))
        if r["gain"] is True:
            points.append(((r["trial_id"], "compressed"), {o: r[o] for o in ("accuracy", "latency_ms", "size_mb")}))

    def at_least_as_good(a: dict, b: dict, o: str) -> bool:
        return a[o] >= b[o] if o == "accuracy" else a[o] <= b[o]

    def dominates(a: dict, b: dict) -> bool:
        return all(at_least_as_good(a, b, o) for o in objectives) and any(a[o] != b[o] for o in objectives)

    return {key for key, p in points if not any(dominates(q, p) for _, q in points)}


def front_points(front: list[dict]) -> set[tuple[str, str]]:
    """raylm's front as (trial_id, kind) (its dense members carry a ``-dense`` suffix)."""
    return {(r["trial_id"].removesuffix("-dense"), r["kind"]) for r in front}


def validation_accuracy(cfg, artifact_path) -> tuple[float, int]:
    """An exported artifact scored here on the config's validation split: (accuracy, samples)."""
    from raylm.artifacts import load_artifact
    from raylm.compress.measure import collect
    from raylm.data import MODEL_INPUTS, build_datasets

    inputs = MODEL_INPUTS[cfg.task.modality]
    val = collect(build_datasets(cfg).validation, inputs + ("label",))
    predicted = load_artifact(artifact_path).predict({n: val[n] for n in inputs}).argmax(-1)
    return float((predicted == val["label"]).mean()), int(len(val["label"]))
