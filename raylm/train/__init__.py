"""Data-parallel training under Ray Train: ``fit(cfg)`` builds the data, runs TorchTrainer, and
returns where the checkpoints are."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from raylm.config import RaylmConfig
from raylm.storage import StoragePath, is_uri

log = logging.getLogger("raylm.train")

if TYPE_CHECKING:
    from raylm.train.hooks import TrainHooks


@dataclass
class TrainOutcome:
    metrics: dict[str, Any]
    checkpoint: Path | str  # the latest checkpoint: a local Path, or a URI (str) with URI storage
    best_checkpoint: Path | str  # the best kept (raylm.train.checkpoint.checkpoint_rank: val_accuracy, then val_loss)
    run_dir: Path | str  # the run in storage: a local Path or a URI
    labels: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)


def trains_in_process(cfg: RaylmConfig) -> bool:
    """One torch worker on CPU: Train V2's local mode in the calling process (``in_process.py``)
    instead of a controller and a one-worker group. Several workers or a GPU keep the worker group."""
    from raylm.runtime import resolve_use_gpu

    return cfg.model.backend == "torch" and cfg.train.num_workers == 1 and not resolve_use_gpu(cfg.train.use_gpu, 1)


def fits_in_driver(cfg: RaylmConfig) -> bool:
    """``fit`` trains in this process (:func:`trains_in_process`) on a Ray this process started (one
    node, which ends with it): a controller actor, a placement group and a worker group that imports
    torch again cost the image demo ~16 s of a 40 s ``raylm train``. A run that asks for restarts
    (``train.max_failures``) or joins a cluster keeps the worker group: a restart needs a worker to
    lose, and a cluster's driver may live on a node without the run's resources."""
    from raylm.runtime import started_ray

    return trains_in_process(cfg) and cfg.train.max_failures == 0 and started_ray()


def build_trainer(cfg: RaylmConfig, *, run_config_overrides: dict[str, Any] | None = None,
                  hooks: TrainHooks | None = None, in_process: bool = False,
                  on_report: Callable[[dict[str, Any]], None] | None = None, tracked: tuple[str, ...] = (),
                  on_epoch: Callable[[dict[str, Any]], None] | None = None, scan_run: bool | None = None,
                  in_driver: bool = False):
    """The TorchTrainer, or TensorflowTrainer for ``model.backend: keras``, for ``cfg`` (also used inside Tune trials).

    ``in_process`` (see :func:`trains_in_process`): an :class:`InProcessTrainer` instead, which
    hands each epoch's metrics to ``on_report`` (e.g. a Tune trial's). ``tracked``: dotted config paths
    whose values every epoch records (a PBT trial's mutable keys). ``on_epoch``: called by the
    worker ranked 0 with each epoch's metrics, wherever it runs (experiment tracking: a module-level
    function or a ``functools.partial`` of one, as it travels with the loop's config). ``scan_run``: whether
    a rerun continues from the newest checkpoint already in the run's ``train/`` (default: yes, except a
    local run in this process, e.g. a sweep's trial, which continues only ``train.resume_from``).
    ``in_driver`` (see :func:`fits_in_driver`): in process too, but only when the loop's data is the
    memory feed's kept splits."""
    import ray.train

    from raylm.data import build_datasets
    from raylm.data.shards import train_data_config
    from raylm.data.schedule import run_schedule
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

    training = cfg.train
    use_gpu = False if in_process else resolve_use_gpu(training.use_gpu, training.min_workers)
    check_cpu_budget(training.max_workers, training.cpus_per_worker, use_gpu)  # at full size, Ray Data still needs a CPU
    quiet_data_progress()
    data = build_datasets(cfg)
    # hooks: what a stage above training changes about the run (compression's fine-tune), typed.
    loop_config = {"config": cfg, "labels": data.labels, "data_fingerprint": data.fingerprint,
                   "augment_run_id": data.augment_run_id, "hooks": hooks or TrainHooks(),
                   "schedule": run_schedule(cfg), "tracked": tuple(tracked), "on_epoch": on_epoch}
    datasets = {"train": data.train, "validation": data.validation}
    from raylm.train.memory_feed import use_memory_feed

    if in_process and data.arrays is not None:  # a population sweep's splits held in memory: no Ray Data per epoch or restart
        from raylm.data.arrays import array_shards

        datasets, loop_config["augment_run_id"] = array_shards(cfg, data.arrays)
    elif cfg.model.backend == "torch" and use_memory_feed(cfg, data.clean_train, data.validation):
        # One worker over small kept splits: the loop reads them into memory once and augments there;
        # Ray Train starts no split coordinator and Ray Data no per-epoch pipeline (memory_feed.py).
        loop_config["memory"] = {"train": data.clean_train, "validation": data.validation}
        datasets = {}
        in_process = in_process or in_driver
    # A streamed set keeps its worker even where fits_in_driver: in this process Ray Data's streaming
    # executor would share the training loop's interpreter (ingest.py, 800 MB at 6.3x the store, quiet:
    # 1,350-1,450 samples/s trained in the driver at a data wait of 8-10 %, 2,480-2,523 in a worker).
    where = run_config_overrides or {}
    # Where Ray Train writes: the run's storage (a URI goes straight there, through pyarrow), or the
    # local directory a caller names (compression's fine-tune, a sweep's trial).
    if "storage_path" in where:
        storage = StoragePath.of(where["storage_path"])
        run_location, ray_train_dir = storage.join(where["name"]), storage.join(where.get("name", "train"))
    else:
        storage = run_location = cfg.run_location
        ray_train_dir = run_location.join("train")
    train_location = run_location.join("train") if in_process else ray_train_dir
    # Resume decided once, here, from storage: the newest whole checkpoint of this run (a re-run with the
    # same train.name), else train.resume_from; every rank loads that one (loop.py).
    # (A local one-worker run in this process keeps its old rule: only train.resume_from.)
    if scan_run is None:
        scan_run = not (in_process and storage.is_local)
    loop_config["resume_checkpoint"] = decide_resume(cfg, train_location, data, scan_run=scan_run)
    _say_if_trained(cfg, loop_config["resume_checkpoint"], train_location)
    if in_process:
        from raylm.train.in_process import InProcessTrainer

        return InProcessTrainer(train_loop_per_worker, loop_config, datasets, train_location, training.keep_checkpoints,
                                on_report), data
    resources = {"CPU": training.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    run_config = dict(
        name="train",
        storage_path=str(cfg.run_location) if cfg.run_location.is_local else cfg.run_location.path,
        **({} if storage.is_local else {"storage_filesystem": storage.fs}),
        failure_config=ray.train.FailureConfig(max_failures=training.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=training.keep_checkpoints, checkpoint_score_attribute="val_accuracy", checkpoint_score_order="max"
        ),
        worker_runtime_env={"env_vars": dict(WORKER_ENV_VARS) | BACKEND_ENV_VARS},
    ) | (run_config_overrides or {})
    if storage.is_local and cfg.model.backend == "torch" and hooks is None:
        # A restarted worker group resumes from the newest whole checkpoint there (loop.py).
        loop_config["train_dir"] = str(Path(run_config["storage_path"]) / run_config["name"])
    elif cfg.model.backend == "torch" and hooks is None:
        # URI storage: at each (re)start rank 0 lists the run's checkpoints in storage and every rank
        # loads its choice (loop.py). A checkpoint uploaded just before a node was lost, which Ray's
        # controller never registered, is then continued rather than trained again.
        loop_config["train_uri"] = train_location.uri
    trainer = DataParallelTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=training.num_workers, use_gpu=use_gpu, resources_per_worker=resources,
                                                 placement_strategy=training.placement_strategy),
        run_config=ray.train.RunConfig(**run_config),
        datasets=datasets,
        # Ray Train replaces each dataset's execution options with these: data.stream_memory's bound,
        # and Ray Data's CPUs without the training workers' (raylm/data/shards.py).
        dataset_config=train_data_config(cfg, max_workers=training.max_workers,
                                         training_cpus=training.max_workers * training.cpus_per_worker),
    )
    return trainer, data


def decide_resume(cfg: RaylmConfig, train_location: StoragePath, data, *, scan_run: bool = True) -> str | None:
    """The checkpoint this run continues from, decided on the driver from storage (local or URI):
    the newest checkpoint of the run's own ``train/`` whose ``raylm.json`` reads (a re-run with the same
    ``train.name``), else ``train.resume_from``. Every one of them must belong to this very run
    (labels, model, data). None: a fresh start. Ray Train's worker-group restarts use the checkpoint
    its controller hands every rank (``ray.train.get_checkpoint()``) instead."""
    from raylm.train.checkpoint import check_belongs, stored_checkpoints

    options = cfg.train.storage_options
    newest = None
    for location, meta in stored_checkpoints(train_location) if scan_run else []:
        check_belongs(location.uri, cfg, data.labels, data.fingerprint, meta=meta)
        if newest is None or int(meta.get("epoch", 0)) > newest[1]:
            newest = (location.uri, int(meta.get("epoch", 0)))
    if cfg.train.resume_from:
        resume = StoragePath.of(cfg.train.resume_from, options if is_uri(cfg.train.resume_from) else None)
        from raylm.train.checkpoint import read_stored_meta

        check_belongs(resume.uri, cfg, data.labels, data.fingerprint, meta=read_stored_meta(resume))
        if newest is None:
            return resume.uri
    return newest[0] if newest else None


def _say_if_trained(cfg: RaylmConfig, resume: str | None, train_location: StoragePath) -> None:
    """One line when the checkpoint a run continues from is already at ``train.epochs``: the run trains no
    epoch. Its own (a rerun of a finished run with the same ``train.name``): its checkpoints are the answer.
    Another run's (``train.resume_from``): there is nothing of this run's to answer with."""
    if resume is None:
        return
    from raylm.train.checkpoint import CheckpointError, read_stored_meta

    try:
        location = StoragePath.of(resume, cfg.train.storage_options if is_uri(resume) else None)
        epoch = int(read_stored_meta(location)["epoch"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return
    own = resume.startswith(train_location.uri.rstrip("/") + "/")
    if epoch < cfg.train.epochs:
        # On the console, not only in the workers' log: the first epoch line would otherwise read N+1/M.
        log.info("[raylm] resuming %s after epoch %d of %d (from %s)", cfg.run_location.name, epoch, cfg.train.epochs,
                 "its last checkpoint" if own else f"train.resume_from={resume}", extra={"console": True})
        return
    if own:
        log.warning("[raylm] %s is already trained to epoch %d (train.epochs=%d): nothing left to train; its "
                    "checkpoints are the result (raise train.epochs to go on, or choose another train.name)",
                    cfg.run_location.name, epoch, cfg.train.epochs)
    else:
        log.warning("[raylm] train.resume_from=%s is already at epoch %d (train.epochs=%d): nothing left to train "
                    "(raise train.epochs to train on from it)", resume, epoch, cfg.train.epochs)


class TrainingFailed(RuntimeError):
    """A run that stopped for good: more worker-group failures than ``train.max_failures`` allows."""


def _saved_epochs(cfg: RaylmConfig) -> list[tuple[int, str]]:
    """(epoch, URI) of the run's stored checkpoints whose ``raylm.json`` names an epoch."""
    from raylm.train.checkpoint import stored_checkpoints

    saved = []
    for checkpoint, meta in stored_checkpoints(cfg.run_location.join("train")):
        try:
            saved.append((int(meta["epoch"]), checkpoint.uri))
        except (KeyError, TypeError, ValueError):
            continue
    return saved


def _failure_message(cfg: RaylmConfig, error: BaseException) -> str:
    saved = _saved_epochs(cfg)
    latest = (f"the latest checkpoint, epoch {max(saved)[0]}, is {max(saved)[1]} (train.resume_from= continues it)"
              if saved else "no checkpoint was saved")
    cause = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return (f"training {cfg.run_location.name} failed and was not restarted (train.max_failures={cfg.train.max_failures}); "
            f"{latest}; cause: {type(error).__name__}: {cause[:300]}")


def _interrupted_message(cfg: RaylmConfig) -> str:
    epochs = [epoch for epoch, _ in _saved_epochs(cfg)]
    where = (f"its newest checkpoint is epoch {max(epochs)} of {cfg.train.epochs}; rerun the same command "
             f"(train.name={cfg.run_location.name}) to continue from it") if epochs else "no checkpoint was saved"
    return f"training {cfg.run_location.name} interrupted: {where}"


def _path_or_uri(location: StoragePath) -> Path | str:
    return location.local_path if location.is_local else location.uri


def fit(cfg: RaylmConfig) -> TrainOutcome:
    """Train ``cfg`` on the connected Ray cluster (see ``raylm.runtime.ensure_ray``). On a cluster
    that must grow first, the autoscaler is asked for the whole run and waited for (up to
    ``train.wait_for_resources_s``) before Ray Train starts its worker group. With URI storage
    the checkpoints go straight to the URI and the run's other files (data_report.json) through its
    workspace (``raylm.storage.run_workspace``)."""
    from raylm.storage import run_workspace
    from raylm.tracking import epoch_hook, log_files, tracked_run

    # Tracking on: the run directory's MLflow run (created once, continued by a rerun); its id travels
    # to the worker ranked 0 in the loop's config, so a restarted worker group logs into the same run.
    with run_workspace(cfg.run_location), tracked_run(cfg, "train") as run:
        outcome = _fit(cfg, on_epoch=epoch_hook(run))
        log_files(run, [cfg.run_dir / "data_report.json"])
        return outcome


def _fit(cfg: RaylmConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainOutcome:
    import ray.train

    from raylm.capacity import check_run_paths, check_training_fits, resources_for, training_bundles
    from raylm.runtime import resolve_use_gpu

    training = cfg.train
    capacity = check_run_paths(cfg)  # node-local paths on a multi-node cluster: refused before any Ray work
    use_gpu = resolve_use_gpu(training.use_gpu, training.min_workers)
    check_training_fits(capacity, training.max_workers, training.cpus_per_worker, use_gpu, min_workers=training.min_workers)
    with resources_for(training_bundles(training.max_workers, training.cpus_per_worker, use_gpu),
                       timeout_s=training.wait_for_resources_s,
                       enough=training_bundles(training.min_workers, training.cpus_per_worker, use_gpu)):  # elastic: start on min
        from raylm.train.in_process import InProcessTrainer, torch_threads

        trainer, data = build_trainer(cfg, on_epoch=on_epoch, in_driver=fits_in_driver(cfg), scan_run=True)
        if not isinstance(trainer, InProcessTrainer) and getattr(trainer, "datasets", None):
            from raylm.data.shards import warm_stream_workers

            warm_stream_workers()  # a set fed through Ray Data: its first epoch's processes start with the worker group
        try:
            if isinstance(trainer, InProcessTrainer):
                with torch_threads(max(1, int(training.cpus_per_worker))):  # a worker's share, as Ray gives its actors
                    result = trainer.fit()
            else:
                result = trainer.fit()
        except ray.train.TrainingFailedError as err:  # Train V2 raises what 2.x returned in result.error
            raise TrainingFailed(_failure_message(cfg, err)) from err
        except SystemExit as err:
            # Ctrl-C: Ray Train V2's own SIGINT handler aborts the worker group (the epoch in progress may
            # still end and save), then the driver's ray.get raises SystemExit(1): the CLI exited 1 with no
            # word. An Interrupted says how to continue, and the CLI exits 130 as for any Ctrl-C.
            from raylm.errors import Interrupted

            raise Interrupted(_interrupted_message(cfg)) from err
    if result.error is not None:
        raise TrainingFailed(_failure_message(cfg, result.error)) from result.error
    from raylm.train.checkpoint import best_kept, checkpoint_location, read_stored_meta, stored_reports

    if result.checkpoint is None:  # a rerun of a run already at train.epochs reports nothing: its own checkpoints
        stored = stored_reports(cfg.run_location.join("train"))
        if not stored:
            raise RuntimeError("training finished without a checkpoint")
        as_ray = [(ray.train.Checkpoint(location.path, filesystem=location.fs), metrics) for location, metrics in stored]
        result = ray.train.Result(metrics=stored[-1][1], checkpoint=as_ray[-1][0], path=cfg.run_location.path,
                                  error=None, best_checkpoints=as_ray)
    best = best_kept(result.best_checkpoints)[0]

    latest = checkpoint_location(result.checkpoint, cfg.train.storage_options)
    return TrainOutcome(
        metrics=dict(result.metrics),
        checkpoint=_path_or_uri(latest),
        best_checkpoint=_path_or_uri(checkpoint_location(best, cfg.train.storage_options)),
        run_dir=_path_or_uri(cfg.run_location),
        labels=data.labels,
        history=read_stored_meta(latest)["history"],
    )
