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
