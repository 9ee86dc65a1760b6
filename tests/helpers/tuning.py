"""Shared by the sweep tests."""

from __future__ import annotations

import json
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
