"""One-worker CPU training in the calling process: Ray Train V2's local mode (``ScalingConfig(num_workers=0)``).

A sweep trial that trains on one CPU worker needs neither a Train controller actor nor a worker
group (two more processes, a placement group, torch imported twice more): the trial's own actor
runs the training loop. Local mode keeps only the last report, in memory, so raylm installs its
own report handler, a ``LocalTrainFnUtils`` that

- persists every reported checkpoint under ``<run>/train/`` (a local directory atomically; a URI
  file by file with ``raylm.json`` last, the file every reader looks for first) and keeps the best
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
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ray.train.v2._internal.execution.train_fn_utils import LocalTrainFnUtils, set_train_fn_utils

from raylm.atomic import atomic_directory
from raylm.storage import StoragePath

OnReport = Callable[[dict[str, Any]], None]  # an epoch's metrics (and its persisted checkpoint_path)


class _PersistedReports(LocalTrainFnUtils):
    def __init__(self, datasets: dict[str, Any], train_dir: StoragePath, keep: int, on_report: OnReport | None):
        super().__init__(experiment_name=train_dir.name, dataset_shards=datasets)
        self.train_dir, self.keep, self.on_report = train_dir, keep, on_report
        from raylm.train.checkpoint import stored_reports

        # Oldest first; a resumed run's earlier checkpoints included, so train.keep_checkpoints holds for the
        # run, not per process (a killed run's rerun kept its 3 old checkpoints beside 3 new).
        self.kept: list[tuple[StoragePath, dict[str, Any]]] = stored_reports(train_dir)
        # A resumed run numbers on after the checkpoints already there, never over them.
        taken = [int(p.name.removeprefix("checkpoint_")) for p in train_dir.iterdir()
                 if p.name.startswith("checkpoint_") and p.name.removeprefix("checkpoint_").isdigit()]
        self.checkpoints = max(taken, default=-1) + 1

    def report(self, metrics: dict[str, Any], checkpoint=None, *args, **kwargs) -> None:
        import ray.train

        from raylm.train.checkpoint import META

        persisted = None
        if checkpoint is not None:
            final = self.train_dir.join(f"checkpoint_{self.checkpoints:06d}")
            self.checkpoints += 1
            if final.is_local:
                with atomic_directory(final.local_path) as tmp:
                    shutil.copytree(checkpoint.path, tmp, dirs_exist_ok=True)
            else:
                final.upload_tree(checkpoint.path, last=(META,))
            persisted = ray.train.Checkpoint(final.path, filesystem=final.fs)
            self.kept.append((final, dict(metrics)))
            self._prune()
        super().report(metrics, checkpoint=persisted)
        if self.on_report is not None:
            self.on_report(dict(metrics) | ({"checkpoint_path": persisted.path} if persisted else {}))

    def _prune(self) -> None:
        latest = self.kept[-1][0]
        from raylm.train.checkpoint import checkpoint_rank

        ranked = sorted(self.kept, key=lambda pm: checkpoint_rank(pm[1]), reverse=True)
        keep = {path for path, _ in ranked[:self.keep]} | {latest}
        for path, _ in self.kept:
            if path not in keep:
                if path.is_local:
                    shutil.rmtree(path.local_path, ignore_errors=True)
                else:
                    path.join("raylm.json").delete_file()  # first: a reader never trusts what is left
                    path.delete_tree()
        self.kept = [(p, m) for p, m in self.kept if p in keep]


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` for the block (the driver's default is every core;
    a Ray worker with ``num_cpus`` below 2 gets one through OMP_NUM_THREADS), then put back."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class InProcessTrainer:
    """``fit()`` like a Ray Train trainer's, with the loop run here under Train V2's local mode."""

    def __init__(self, train_loop: Callable[[dict], None], loop_config: dict[str, Any], datasets: dict[str, Any],
                 train_dir: StoragePath, keep_checkpoints: int, on_report: OnReport | None = None):
        self.train_loop, self.loop_config, self.datasets = train_loop, loop_config, datasets
        self.train_dir, self.keep_checkpoints, self.on_report = train_dir, keep_checkpoints, on_report

    def fit(self):
        import tempfile

        import ray.train
        from ray.train.torch import TorchTrainer

        train_dir = self.train_dir
        if train_dir.is_local:
            train_dir.local_path.mkdir(parents=True, exist_ok=True)
        reports = _PersistedReports(self.datasets, train_dir, self.keep_checkpoints, self.on_report)
        train_loop = self.train_loop

        def loop_with_persisted_reports(loop_config: dict) -> None:
            set_train_fn_utils(reports)  # replaces the in-memory handler Ray's local controller just set
            train_loop(loop_config)

        # Local mode's own RunConfig writes nothing the run keeps (reports go through ours): a local run
        # names its directory as before; a URI run a scratch directory of this process.
        scratch = tempfile.TemporaryDirectory(prefix="raylm-local-mode-") if not train_dir.is_local else None
        storage = str(train_dir.parent) if scratch is None else scratch.name
        trainer = TorchTrainer(loop_with_persisted_reports, train_loop_config=self.loop_config,
                               scaling_config=ray.train.ScalingConfig(num_workers=0), datasets=self.datasets,
                               run_config=ray.train.RunConfig(name=train_dir.name, storage_path=storage))
        try:
            trainer.fit()
        finally:
            set_train_fn_utils(None)
            if scratch is not None:
                scratch.cleanup()
        # The run's checkpoints, earlier ones included: a rerun of a run already at train.epochs trains
        # nothing and answers with them.
        kept = reports.kept
        if not kept:
            raise RuntimeError("training finished without a checkpoint")
        latest_path, latest_metrics = kept[-1]

        def checkpoint(p: StoragePath):
            return ray.train.Checkpoint(p.path, filesystem=p.fs)

        return ray.train.Result(metrics=latest_metrics, checkpoint=checkpoint(latest_path),
                                path=train_dir.path, error=None,
                                best_checkpoints=[(checkpoint(p), m) for p, m in kept])
