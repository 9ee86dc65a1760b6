"""One-worker CPU training in the calling process: Ray Train V2's local mode (``ScalingConfig(num_workers=0)``).

A sweep trial that trains on one CPU worker needs neither a Train controller actor nor a worker
group (two more processes, a placement group, torch imported twice more): the trial's own actor
runs the training loop. Local mode keeps only the last report, in memory, so raylm installs its
own report handler, a ``LocalTrainFnUtils`` that

- persists every reported checkpoint under ``<run_dir>/train/`` (atomically) and keeps the best
  ``train.keep_checkpoints`` by val_accuracy plus the latest, as ``CheckpointConfig`` does on the
  distributed path;
- hands each epoch to ``on_report`` (a sweep's trial passes it to Tune, as ``TuneReportCallback``
  does on the distributed path, so ASHA can stop the trial between epochs; a stopped trial's
  ``on_report`` raises, which ends training).

The handler is process state; it is removed when training ends, however it ends, so a reused
trial actor starts clean.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from ray.train.v2._internal.execution.train_fn_utils import LocalTrainFnUtils, set_train_fn_utils

from raylm.atomic import atomic_directory

OnReport = Callable[[dict[str, Any]], None]  # an epoch's metrics (and its persisted checkpoint_path)


class _PersistedReports(LocalTrainFnUtils):
    def __init__(self, datasets: dict[str, Any], train_dir: Path, keep: int, on_report: OnReport | None):
        super().__init__(experiment_name=train_dir.name, dataset_shards=datasets)
        self.train_dir, self.keep, self.on_report = train_dir, keep, on_report
        self.kept: list[tuple[Path, dict[str, Any]]] = []  # oldest first
        self.checkpoints = 0

    def report(self, metrics: dict[str, Any], checkpoint=None, *args, **kwargs) -> None:
        import ray.train

        persisted = None
        if checkpoint is not None:
            final = self.train_dir / f"checkpoint_{self.checkpoints:06d}"
            self.checkpoints += 1
            with atomic_directory(final) as tmp:
                shutil.copytree(checkpoint.path, tmp, dirs_exist_ok=True)
            persisted = ray.train.Checkpoint(str(final))
            self.kept.append((final, dict(metrics)))
            self._prune()
        super().report(metrics, checkpoint=persisted)
        if self.on_report is not None:
            self.on_report(dict(metrics) | ({"checkpoint_path": persisted.path} if persisted else {}))

    def _prune(self) -> None:
        latest = self.kept[-1][0]
        ranked = sorted(self.kept, key=lambda pm: pm[1].get("val_accuracy", float("-inf")), reverse=True)
        keep = {path for path, _ in ranked[:self.keep]} | {latest}
        for path, _ in self.kept:
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)
        self.kept = [(p, m) for p, m in self.kept if p in keep]


class InProcessTrainer:
    """``fit()`` like a Ray Train trainer's, with the loop run here under Train V2's local mode."""

    def __init__(self, train_loop: Callable[[dict], None], loop_config: dict[str, Any], datasets: dict[str, Any],
                 run_dir: Path, keep_checkpoints: int, on_report: OnReport | None = None):
        self.train_loop, self.loop_config, self.datasets = train_loop, loop_config, datasets
        self.run_dir, self.keep_checkpoints, self.on_report = run_dir, keep_checkpoints, on_report

    def fit(self):
        import ray.train
        from ray.train.torch import TorchTrainer

        train_dir = self.run_dir / "train"
        train_dir.mkdir(parents=True, exist_ok=True)
        reports = _PersistedReports(self.datasets, train_dir, self.keep_checkpoints, self.on_report)
        train_loop = self.train_loop

        def loop_with_persisted_reports(loop_config: dict) -> None:
            set_train_fn_utils(reports)  # replaces the in-memory handler Ray's local controller just set
            train_loop(loop_config)

        trainer = TorchTrainer(loop_with_persisted_reports, train_loop_config=self.loop_config,
                               scaling_config=ray.train.ScalingConfig(num_workers=0), datasets=self.datasets,
                               run_config=ray.train.RunConfig(name="train", storage_path=str(self.run_dir)))
        try:
            trainer.fit()
        finally:
            set_train_fn_utils(None)
        if not reports.kept:
            raise RuntimeError("training finished without a checkpoint")
        latest_path, latest_metrics = reports.kept[-1]
        return ray.train.Result(metrics=latest_metrics, checkpoint=ray.train.Checkpoint(str(latest_path)),
                                path=str(train_dir), error=None,
                                best_checkpoints=[(ray.train.Checkpoint(str(p)), m) for p, m in reports.kept])
