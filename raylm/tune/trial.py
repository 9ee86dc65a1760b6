"""One trial: a Ray Train run for the sampled config, then its compression, measured.

Ray 2.60 (Train V2) runs a trainer *inside* a Tune function trainable: the trial's own process
is a light driver, the Train workers ask the cluster for their own resources, and
``TuneReportCallback`` forwards each epoch's metrics so ASHA can stop the trial between epochs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TRIAL_RECORD = "raylm_trial.json"


def run_trial(params: dict[str, Any], *, base: dict[str, Any], trials_dir: str) -> None:
    """Tune function trainable. ``params``: ``{dotted path: value}``; ``base``: the sweep's config;
    the trial writes ``<trials_dir>/<trial id>/{train,compress}/``."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raylm.compress.objectives import compress_and_measure
    from raylm.train import build_trainer
    from raylm.tune.space import trial_config

    # Not Tune's get_trial_dir(): that is a scratch directory on the node, not the run's storage.
    trial_dir = Path(trials_dir) / tune.get_context().get_trial_id()
    cfg = trial_config(base, params, storage_path=trials_dir, name=trial_dir.name)
    trainer, _ = build_trainer(cfg, run_config_overrides={"callbacks": [TuneReportCallback()]})
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    best, trained = max(result.best_checkpoints, key=lambda cm: cm[1].get("val_accuracy", float("-inf")))
    measured = compress_and_measure(cfg, Path(best.path))
    final = {"val_accuracy": trained["val_accuracy"], "best_epoch": trained.get("epoch"),
             "epochs": result.metrics.get("epoch"), **measured,
             "checkpoint": best.path, "compressed": True}
    # The trial's own record beside its checkpoints and artifact: readable without Tune's experiment state.
    tmp = trial_dir / f".{TRIAL_RECORD}.tmp"
    tmp.write_text(json.dumps({"params": params, "result": final}, indent=2))
    os.replace(tmp, trial_dir / TRIAL_RECORD)
    # done=True: Tune marks the trial finished as it processes this very result, so an interrupt
    # right after it cannot leave a measured trial "running" (and rerun on resume).
    tune.report(final | {"done": True})
