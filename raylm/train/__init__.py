"""Data-parallel training under Ray Train: ``fit(cfg)`` builds the data, runs TorchTrainer, and
returns where the checkpoints are."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from raylm.config import RaylmConfig

if TYPE_CHECKING:
    from raylm.train.hooks import TrainHooks


@dataclass
class TrainOutcome:
    metrics: dict[str, Any]
    checkpoint: Path  # the latest checkpoint
    best_checkpoint: Path  # highest val_accuracy among those kept
    run_dir: Path
    labels: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)


def trains_in_process(cfg: RaylmConfig) -> bool:
    """One torch worker on CPU: Train V2's local mode in the calling process (``in_process.py``)
    instead of a controller and a one-worker group. Several workers or a GPU keep the worker group."""
    from raylm.runtime import resolve_use_gpu

    return cfg.model.backend == "torch" and cfg.train.num_workers == 1 and not resolve_use_gpu(cfg.train.use_gpu, 1)


def build_trainer(cfg: RaylmConfig, *, run_config_overrides: dict[str, Any] | None = None,
                  hooks: TrainHooks | None = None, in_process: bool = False,
                  on_report: Callable[[dict[str, Any]], None] | None = None):
    """The TorchTrainer, or TensorflowTrainer for ``model.backend: keras``, for ``cfg`` (also used inside Tune trials).

    ``in_process`` (see :func:`trains_in_process`): an :class:`InProcessTrainer` instead, which
    hands each epoch's metrics to ``on_report`` (e.g. a Tune trial's)."""
    import ray.train

    from raylm.data import build_datasets
    from raylm.runtime import WORKER_ENV_VARS, check_cpu_budget, quiet_data_progress, resolve_use_gpu
    from raylm.train.hooks import TrainHooks

    if cfg.model.backend == "keras":
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # ray.train.tensorflow imports TensorFlow
        from ray.train.tensorflow import TensorflowTrainer as DataParallelTrainer

        from raylm.train.keras_loop import WORKER_ENV_VARS as BACKEND_ENV_VARS
        from raylm.train.keras_loop import keras_train_loop as train_loop_per_worker
    else:
        from ray.train.torch import TorchTrainer as DataParallelTrainer

        from raylm.train.loop import train_loop_per_worker

        BACKEND_ENV_VARS = {}

    tc = cfg.train
    use_gpu = False if in_process else resolve_use_gpu(tc.use_gpu, tc.min_workers)
    check_cpu_budget(tc.max_workers, tc.cpus_per_worker, use_gpu)  # at full size, Ray Data still needs a CPU
    quiet_data_progress()
    data = build_datasets(cfg)
    # hooks: what a stage above training changes about the run (compression's fine-tune), typed.
    loop_config = {"config": cfg, "labels": data.labels, "data_fingerprint": data.fingerprint,
                   "augment_run_id": data.augment_run_id, "hooks": hooks or TrainHooks()}
    datasets = {"train": data.train, "validation": data.validation}
    if in_process:
        from raylm.train.in_process import InProcessTrainer

        where = run_config_overrides or {}
        run_dir = Path(where["storage_path"]) / where["name"] if "storage_path" in where else cfg.run_dir
        return InProcessTrainer(train_loop_per_worker, loop_config, datasets, run_dir, tc.keep_checkpoints,
                                on_report), data
    resources = {"CPU": tc.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    run_config = dict(
        name="train",
        storage_path=str(cfg.run_dir),
        failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=tc.keep_checkpoints, checkpoint_score_attribute="val_accuracy", checkpoint_score_order="max"
        ),
        worker_runtime_env={"env_vars": dict(WORKER_ENV_VARS) | BACKEND_ENV_VARS},
    ) | (run_config_overrides or {})
    _check_resumable(cfg, data, run_config)
    if "://" not in str(run_config["storage_path"]) and cfg.model.backend == "torch" and hooks is None:
        # A restarted worker group resumes from the newest whole checkpoint there (loop.py).
        loop_config["train_dir"] = str(Path(run_config["storage_path"]) / run_config["name"])
    trainer = DataParallelTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=tc.num_workers, use_gpu=use_gpu, resources_per_worker=resources,
                                                 placement_strategy=tc.placement_strategy),
        run_config=ray.train.RunConfig(**run_config),
        datasets=datasets,
    )
    return trainer, data


def _check_resumable(cfg: RaylmConfig, data, run_config: dict[str, Any]) -> None:
    """Ray Train continues from the latest checkpoint under ``storage_path/name`` (a re-run with the
    same ``train.name``) or from ``train.resume_from``: both must be checkpoints of this very run."""
    from raylm.train.checkpoint import check_belongs, run_checkpoints

    candidates = []
    if cfg.train.resume_from and "://" not in cfg.train.resume_from:
        candidates.append(Path(cfg.train.resume_from))
    if "://" not in str(run_config["storage_path"]):
        candidates += run_checkpoints(Path(run_config["storage_path"]) / run_config["name"])
    for checkpoint in candidates:
        check_belongs(checkpoint, cfg, data.labels, data.fingerprint)


class TrainingFailed(RuntimeError):
    """A run that stopped for good: more worker-group failures than ``train.max_failures`` allows."""


def _failure_message(cfg: RaylmConfig, error: BaseException) -> str:
    from raylm.train.checkpoint import CheckpointError, read_meta, run_checkpoints

    saved = []
    for checkpoint in run_checkpoints(cfg.run_dir / "train"):
        try:
            saved.append((int(read_meta(checkpoint)["epoch"]), checkpoint))
        except (CheckpointError, KeyError, TypeError, ValueError):
            continue
    latest = (f"the latest checkpoint, epoch {max(saved)[0]}, is {max(saved)[1]} (train.resume_from= continues it)"
              if saved else "no checkpoint was saved")
    cause = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return (f"training {cfg.run_dir.name} failed and was not restarted (train.max_failures={cfg.train.max_failures}); "
            f"{latest}; cause: {type(error).__name__}: {cause[:300]}")


def fit(cfg: RaylmConfig) -> TrainOutcome:
    """Train ``cfg`` on the connected Ray cluster (see ``raylm.runtime.ensure_ray``). On a cluster
    that must grow first, the autoscaler is asked for the whole run and waited for (up to
    ``train.wait_for_resources_s``) before Ray Train starts its worker group."""
    import ray.train

    from raylm.capacity import check_run_paths, check_training_fits, resources_for, training_bundles
    from raylm.runtime import resolve_use_gpu

    tc = cfg.train
    capacity = check_run_paths(cfg)  # node-local paths on a multi-node cluster: refused before any Ray work
    use_gpu = resolve_use_gpu(tc.use_gpu, tc.min_workers)
    check_training_fits(capacity, tc.max_workers, tc.cpus_per_worker, use_gpu)
    with resources_for(training_bundles(tc.max_workers, tc.cpus_per_worker, use_gpu), timeout_s=tc.wait_for_resources_s,
                       enough=training_bundles(tc.min_workers, tc.cpus_per_worker, use_gpu)):  # elastic: start on min
        trainer, data = build_trainer(cfg)
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as err:  # Train V2 raises what 2.x returned in result.error
            raise TrainingFailed(_failure_message(cfg, err)) from err
    if result.error is not None:
        raise TrainingFailed(_failure_message(cfg, result.error)) from result.error
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    best = max(result.best_checkpoints, key=lambda cm: cm[1].get("val_accuracy", float("-inf")))[0]
    from raylm.train.checkpoint import read_meta

    return TrainOutcome(
        metrics=dict(result.metrics),
        checkpoint=Path(result.checkpoint.path),
        best_checkpoint=Path(best.path),
        run_dir=cfg.run_dir,
        labels=data.labels,
        history=read_meta(result.checkpoint.path)["history"],
    )
