"""One trial: a Ray Train run for the sampled config, then its compression, measured.

Ray 2.60 (Train V2) runs a trainer *inside* a Tune function trainable: the trial's own process
is a light driver, the Train workers ask the cluster for their own resources, and
``TuneReportCallback`` forwards each epoch's metrics so ASHA can stop the trial between epochs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

TRIAL_RECORD = "raylm_trial.json"
log = logging.getLogger(__name__)


def _measure_compressed(cfg, checkpoint: Path) -> dict[str, Any]:
    """Compress the trial's best checkpoint as its config says; the objectives of the artifact."""
    if cfg.model.backend == "keras":
        from raylm.compress.keras import compress_keras_checkpoint

        result = compress_keras_checkpoint(cfg, checkpoint, latency_runs=cfg.compress.latency_runs)
        row = result.report[-1]
        return {"accuracy": row["accuracy"], "size_mb": row["size_bytes"] / 1e6,
                "latency_ms": row["latency_ms_batch1"]["p50"], "latency_batch_size": 1,
                "artifact": str(result.artifact), "variant": row["variant"]}
    from raylm.compress import compress

    report = compress(cfg, checkpoint, verbose=False)
    batch = cfg.compress.serving_batch_size
    c = report["compressed"]
    return {"accuracy": c["accuracy"], "size_mb": c["file_bytes"] / 1e6,
            "latency_ms": c["latency"][f"batch_{batch}"]["p50_ms"], "latency_batch_size": batch,
            "artifact": report["artifact"], "variant": report["variant"]}


def run_trial(params: dict[str, Any], *, base: dict[str, Any], trials_dir: str) -> None:
    """Tune function trainable. ``params``: ``{dotted path: value}``; ``base``: the sweep's config;
    the trial writes ``<trials_dir>/<trial id>/{train,compress}/``."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

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
    measured = _measure_compressed(cfg, Path(best.path))
    final = {"val_accuracy": trained["val_accuracy"], "best_epoch": trained.get("epoch"),
             "epochs": result.metrics.get("epoch"), **measured,
             "checkpoint": best.path, "compressed": True}
    # The trial's own record, beside Tune's: export and the pipeline read it, and resume tests count it.
    tmp = trial_dir / f".{TRIAL_RECORD}.tmp"
    tmp.write_text(json.dumps({"params": params, "result": final}, indent=2))
    os.replace(tmp, trial_dir / TRIAL_RECORD)
    tune.report(final)
