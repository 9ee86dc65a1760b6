"""One tiny pipeline run through the CLI, shared by the tests that only read its outputs.

``raylm pipeline`` runs as a user runs it (a subprocess driver on the test session's Ray, its output
piped as under ``ray job submit``) with MLflow tracking into a real server. The console tests read its
stdout, logs and report.html, the MLflow test the runs and the registered version it left on the
server. One run instead of one per module: a whole pipeline is ~45 s of the default suite (#27).

Its Serve app is shut down as soon as the run ends (tests that query a model serve it themselves), so
nothing of it outlives the fixture but files and the MLflow server's records.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.cli import _env
from tests.helpers.configs import shared_cache_dir
from tests.helpers.paths import REPO
from tests.helpers.ports import free_port

NAME = "piped"
LEARNING_RATES = (0.01, 0.005)  # a grid: one trial each, so the sweep has a known number of children
EPOCHS = 2  # per trial and for the retrain: a child's metric history has two steps, not one


@dataclass
class TrackedPipeline:
    root: Path  # <root>/runs/<NAME> is the run; other tests may add their own runs beside it
    done: subprocess.CompletedProcess  # the CLI's exit status, stdout and stderr
    tracking_uri: str
    experiment: str
    model_name: str

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / NAME

    @property
    def console(self) -> str:
        return self.done.stdout + self.done.stderr


def tiny_cli_overrides(root: Path, data_root: dict[str, Path], name: str) -> list[str]:
    """The tiny image config as ``raylm`` overrides, run ``name`` under ``root/runs``."""
    return ["task.modality=image", "model.name=seed_cnn", f"data.path={data_root['image']}",
            "data.validation_fraction=0.3", f"data.cache_dir={shared_cache_dir(data_root, 'image')}", f"train.storage_path={root / 'runs'}",
            "train.batch_size=8", "train.cpus_per_worker=0.5", "train.lr=0.005", f"train.name={name}"]


def run_tracked_pipeline(root: Path, data_root: dict[str, Path], tracking_uri: str, timeout_s: float = 1500) -> TrackedPipeline:
    """Sweep (2 trials x 2 epochs, side by side: one after the other cost ~5 s, #27 budget) -> retrain (2 epochs) -> compress -> evaluate -> serve, tracked in a
    fresh experiment, the served artifact registered under a fresh model name."""
    import ray
    from ray import serve

    from raylm.runtime import ensure_ray

    if not ray.is_initialized():
        ensure_ray(num_cpus=2, configure_logging=False)
    experiment, model_name = f"test-{uuid.uuid4().hex[:10]}", f"pipe-{uuid.uuid4().hex[:8]}"
    grid = ", ".join(str(lr) for lr in LEARNING_RATES)
    args = tiny_cli_overrides(root, data_root, NAME) + [
        "train.num_workers=1", f"train.epochs={EPOCHS}",
        f"tune.space={{train.lr: {{grid: [{grid}]}}}}", "tune.num_samples=1", "tune.scheduler=fifo",
        "tune.max_concurrent_trials=2", "tune.trial_cpus=0.25", "tune.export=none",
        "tune.objectives=[accuracy, latency_ms]", "compress.latency_runs=3", "compress.latency_warmup=1",
        f"pipeline.retrain_epochs={EPOCHS}", f"serve.port={free_port()}", "serve.replica_cpus=0.25",
        "serve.max_replicas=1", f"tracking.mlflow.uri={tracking_uri}", f"tracking.mlflow.experiment={experiment}",
        f"tracking.mlflow.model_name={model_name}"]
    try:
        done = subprocess.run([sys.executable, "-m", "raylm.cli", "pipeline", *args], cwd=REPO, env=_env(),
                              capture_output=True, text=True, timeout=timeout_s)
    finally:
        serve.shutdown()  # the pipeline's app outlives its driver on a cluster
    return TrackedPipeline(root, done, tracking_uri, experiment, model_name)
