"""``sweep(cfg)``: a Ray Tune run over ``cfg.tune.space``; every trial trains, compresses, measures."""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import posixpath
import signal
import threading
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylm.config import OBJECTIVE_MODES, ConfigError, RaylmConfig, validate_config

if TYPE_CHECKING:
    from raylm.capacity import Capacity

SWEEP_CONFIG = "raylm_sweep.json"
log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    tune_dir: Path
    objectives: list[str]
    rows: list[dict[str, Any]]
    front: list[dict[str, Any]]
    best: dict[str, Any] | None
    files: dict[str, Path] = field(default_factory=dict)
    exported: dict[str, Path] = field(default_factory=dict)


def _optuna_search(metric: str | list[str], mode: str | list[str], seed: int | None):
    from ray.tune.search.optuna import OptunaSearch

    class _ObjectivesAtTheEnd(OptunaSearch):
        """Our objectives exist only in a trial's last report (after compression). Epoch reports
        (for ASHA) lack them, and a trial ASHA stopped has none: Optuna records it as pruned."""

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            names = self.metric if isinstance(self.metric, list) else [self.metric]
            if all(n in result for n in names):
                super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            names = self.metric if isinstance(self.metric, list) else [self.metric]
            if result is not None and not all(result.get(n) is not None for n in names):
                result = None
            super().on_trial_complete(trial_id, result=result, error=error)

    return _ObjectivesAtTheEnd(metric=metric, mode=mode, seed=seed)


def trial_resources(cfg: RaylmConfig) -> dict[str, float]:
    """What a trial's own actor asks for: a trial that trains in its process (one CPU worker) holds
    that worker's CPUs; otherwise it is a light driver (``tune.trial_cpus``) whose Train workers
    ask for their own."""
    from raylm.train import trains_in_process

    return {"CPU": cfg.train.cpus_per_worker if trains_in_process(cfg) else cfg.tune.trial_cpus}


def concurrency(cfg: RaylmConfig, capacity: Capacity | None = None) -> int:
    """Trials at once: what the cluster's CPUs (one kept for Ray Data) and GPUs hold (``capacity``: the
    connected cluster's, read now, unless given)."""
    from raylm.capacity import read_capacity
    from raylm.train import trains_in_process

    tuning, training = cfg.tune, cfg.train
    if trains_in_process(cfg):
        per_trial, needs = training.cpus_per_worker, "train.cpus_per_worker (the trial trains in its own process)"
    else:
        per_trial = tuning.trial_cpus + training.max_workers * training.cpus_per_worker
        needs = "tune.trial_cpus + train.num_workers x train.cpus_per_worker"
    # What the cluster can grow to (nodes up + what its autoscaler can add): Tune queues the trials
    # that do not fit yet, and their pending demand makes the autoscaler add nodes.
    capacity = capacity or read_capacity()
    if training.use_gpu is True:
        # A trial's workers that no node this cluster has or can add holds (no GPU anywhere, no autoscaler to
        # add one): refused here as `raylm train` refuses it, not left to fail every trial one by one.
        from raylm.capacity import check_training_fits

        check_training_fits(capacity, 1, training.cpus_per_worker, True)
    cpus, gpus = capacity.total_max("CPU"), capacity.total_max("GPU")
    growth_unknown = math.isinf(cpus)
    if growth_unknown:  # an autoscaler whose node types are unknown: plan on what is up
        cpus, gpus = capacity.total_up("CPU"), capacity.total_up("GPU")
    if training.use_gpu is True and gpus < training.max_workers:
        # GPU workers scaled to zero: the autoscaler adds them (and their CPUs) once trials ask,
        # so today's resources say nothing; run what the user asked for.
        log.warning("the cluster has %g GPUs now; running %d trial(s) at a time and leaving the GPU workers "
                    "to the autoscaler", gpus, tuning.max_concurrent_trials or 1)
        return tuning.max_concurrent_trials or 1
    grown = " (including what its autoscaler can add)" if capacity.can_grow else ""
    fits = math.floor((cpus - 1 + 1e-9) / per_trial)
    if training.use_gpu is not False and gpus >= training.max_workers:
        fits = min(fits, math.floor(gpus / training.max_workers))
    if growth_unknown:
        # Node types raylm cannot read (KubeRay; a head at num-cpus 0): nothing is refused for size, as for
        # `raylm train`. Tune queues the trials that do not fit yet and their demand makes the autoscaler add
        # nodes; without tune.max_concurrent_trials, as many run at once as the nodes up hold (at least one).
        chosen = tuning.max_concurrent_trials or max(fits, 1)
        if fits < chosen:
            log.warning("the cluster's %g CPUs up fit %d trial(s) of %g CPUs (plus 1 for Ray Data); running %d at a "
                        "time and leaving the rest to its autoscaler (its node types are unknown)",
                        cpus, max(fits, 0), per_trial, chosen)
        return chosen
    if tuning.max_concurrent_trials:
        if tuning.max_concurrent_trials > max(fits, 1):
            raise ConfigError(
                f"tune.max_concurrent_trials={tuning.max_concurrent_trials}: each trial takes {needs} = "
                f"{per_trial:g} CPUs and Ray Data needs 1 more; the cluster's {cpus:g} CPUs{grown} fit {max(fits, 0)} at once")
        return tuning.max_concurrent_trials
    if fits < 1:
        raise ConfigError(f"one trial needs {per_trial:g} CPUs ({needs}) plus 1 for Ray Data; the cluster has {cpus:g}{grown}")
    return fits


def _limit_or_one(cfg: RaylmConfig) -> int:
    """The trials at once of a resumed sweep (Tune keeps its own limit); 1 where the cluster no longer fits them."""
    try:
        return concurrency(cfg)
    except ConfigError:
        return 1


def _check_state_api(cfg: RaylmConfig) -> None:
    """A trial ASHA stops is killed mid-training; Ray Train's placement-group cleaner then frees its
    workers' CPUs/GPUs, and it learns of the death through the State API (the dashboard). Without
    it every stopped trial keeps its resources and the sweep starves."""
    if cfg.tune.scheduler != "asha":
        return
    import ray
    from ray.util.state import list_nodes

    try:
        list_nodes(address=ray.get_runtime_context().gcs_address, limit=1, raise_on_missing_output=False)
    except Exception as err:
        raise ConfigError(f"tune.scheduler=asha needs Ray's State API (the dashboard), which is unreachable "
                          f"({type(err).__name__}): start Ray with the dashboard, or use tune.scheduler=fifo") from None


def _tuner_parts(cfg: RaylmConfig, limit: int):
    """Tune's config for ``limit`` trials at once (:func:`concurrency`), and the epoch-budget stopper if any."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    tuning = cfg.tune
    stopper = None
    objectives = list(tuning.objectives)
    modes = [OBJECTIVE_MODES[o] for o in objectives]
    if tuning.search == "optuna":
        single = len(objectives) == 1
        search = _optuna_search(objectives[0] if single else objectives, modes[0] if single else modes, tuning.seed)
    else:
        # Tune applies max_concurrent_trials to a default generator only, not to one passed in.
        if tuning.max_trial_epochs is not None:  # sample until the trials trained the budget (tune/budget.py)
            from raylm.tune.budget import BudgetedGenerator, EpochBudget

            stopper = EpochBudget(tuning.max_trial_epochs, cfg.train.epochs)
            search = BudgetedGenerator(random_state=tuning.seed, max_concurrent=limit, budget=stopper)
        else:
            search = BasicVariantGenerator(random_state=tuning.seed, max_concurrent=limit)
    if tuning.scheduler == "asha":
        # One more iteration than epochs: a trial's last report is its compressed measurement,
        # which ASHA must not cut off at max_t.
        grace = grace_period(cfg)
        if cfg.train.epochs in asha_decided_at(cfg.train.epochs, grace, tuning.reduction_factor):
            log.warning("tune.grace_period=%g with tune.reduction_factor=%g puts an ASHA rung on epoch %d, the last: "
                        "a trial stopped there trained its whole budget and is never measured (leave "
                        "tune.grace_period unset: raylm derives one that never does)", grace,
                        tuning.reduction_factor, cfg.train.epochs)
        scheduler = ASHAScheduler(time_attr="training_iteration", metric="val_accuracy", mode="max",
                                  max_t=cfg.train.epochs + 1, grace_period=grace,
                                  reduction_factor=tuning.reduction_factor)
    elif tuning.scheduler in ("pbt", "pb2"):
        from raylm.tune.population import population_scheduler

        scheduler = population_scheduler(cfg, limit=limit, generator=search)
    else:
        scheduler = FIFOScheduler()
    # A trial that trains in its own actor leaves it clean (in_process.py; tests/test_tune.py
    # proves it), so the next trial reuses it instead of starting a process and importing torch.
    from raylm.train import trains_in_process

    return tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=tuning.num_samples,
                           max_concurrent_trials=limit if tuning.search == "optuna" else None, time_budget_s=tuning.time_budget_s,
                           reuse_actors=trains_in_process(cfg)), stopper


def grace_period(cfg: RaylmConfig) -> float:
    """Iterations before ASHA may stop a trial (one per epoch, then one for the compressed
    measurement). ``tune.grace_period`` if set; else ASHA's rungs sit at the trial's budget of
    ``epochs + 1`` iterations divided by powers of ``tune.reduction_factor``: the top rung is the
    last report, so no trial is stopped after its last epoch and before its measurement, and the
    lowest is at 2 epochs or more where the budget leaves room for a rung there (one epoch on a
    small validation split is mostly noise), else at the budget / reduction_factor; where even that
    one would be decided at the last epoch, the budget is the only rung."""
    tuning = cfg.tune
    if tuning.grace_period is not None:
        return tuning.grace_period
    budget = cfg.train.epochs + 1
    lowest = min(2.0, budget / tuning.reduction_factor)
    grace = float(budget)
    while grace / tuning.reduction_factor >= lowest - 1e-9:
        grace /= tuning.reduction_factor
    # ASHA decides a rung at the first report at or past it: a rung decided at the last epoch stops a trial
    # that trained its whole budget, never measured (2 of 3 trials of `train.epochs=2` at the default factor
    # 2: the rung at 1.5 fell on epoch 2). No room below it: the only rung is the budget (ASHA stops nothing).
    if cfg.train.epochs in asha_decided_at(cfg.train.epochs, grace, tuning.reduction_factor):
        return float(budget)
    return grace


def asha_decided_at(epochs: int, grace: float, reduction_factor: float) -> list[int]:
    """The iterations at which Ray's ASHA decides its rungs for ``epochs`` epochs plus the measurement
    (``max_t = epochs + 1``): rungs ``grace * factor**k`` below ``max_t``, each at the first report at or past it."""
    budget = epochs + 1
    if not 0 < grace <= budget:
        return []
    count = int(math.log(budget / grace) / math.log(reduction_factor) + 1)
    return sorted({math.ceil(grace * reduction_factor ** k - 1e-9) for k in range(count)})


def result_loggers() -> list:
    """Tune's per-result loggers a sweep keeps: ``result.json`` (raylm's report reads each trial's
    epochs from it) and TensorBoard's event files (documented in the README). Not Tune's
    ``progress.csv``, which nothing reads (raylm writes its own ``trials.csv``): one file write less
    per result. Run the fit under :func:`only_these_loggers`, or Tune adds its CSV logger back."""
    from ray.tune.logger import JsonLoggerCallback, TBXLoggerCallback

    return [JsonLoggerCallback(), TBXLoggerCallback()]


@contextmanager
def only_these_loggers():
    """Tune adds a CSV, JSON and TensorBoard logger to any run that lacks one, unless
    ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS`` is set when the run starts; set only for this fit, so
    other Tune runs in the process keep Tune's defaults."""
    before = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
        else:
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = before


def _trainable(cfg: RaylmConfig, tune_dir: Path, probe, run=None, *, limit: int = 1):
    from ray import tune

    from raylm.data.shards import shared_stream_memory
    from raylm.tracking import nested_under
    from raylm.train import trains_in_process
    from raylm.tune.trial import InProcessTrial, run_trial

    # ``limit`` trials at once each stream the splits in an execution of their own: each gets its part of the
    # data.stream_memory share, or together they would hold ``limit`` times it and spill.
    cfg = shared_stream_memory(cfg, limit)

    # tune.with_parameters puts the decoded splits in the object store once for all trials.
    # Each trial's MLflow run (tracking on) is a child of the sweep's ``run``.
    trainable = tune.with_parameters(InProcessTrial if trains_in_process(cfg) else run_trial,
                                     base=nested_under(cfg, run).to_dict(),
                                     trials_dir=trials_location(cfg, tune_dir), decoded=_decode_once(cfg), probe=probe)
    return tune.with_resources(trainable, trial_resources(cfg))


def trials_location(cfg: RaylmConfig, tune_dir: Path) -> str:
    """Where trials write: ``<tune_dir>/trials`` with local storage (or a shared mount); with URI
    storage ``<run URI>/tune/trials``, never the driver's scratch, which no other node can see: each
    trial publishes its directory there with a commit marker (``raylm/tune/trial.py``)."""
    location = cfg.run_location
    return str(tune_dir / "trials") if location.is_local else location.join("tune", "trials").uri


def experiment_location(cfg: RaylmConfig, tune_dir: Path) -> tuple[str, Any]:
    """Where Tune keeps its experiment (state, per-trial results) and the filesystem to reach it:
    ``tune_dir`` with local storage; with URI storage ``<run>/tune`` in the bucket (Ray stages it in
    its session directory and syncs it there), so an interrupted sweep resumes from storage on any
    node. raylm's own files of the sweep (``raylm_sweep.json``, ``trials.json``...) go through the
    run's workspace and its commit marker, beside Tune's."""
    location = cfg.run_location
    if location.is_local:
        return str(tune_dir), None
    return location.join("tune").path, location.fs


def _import_tensorboard_logger() -> None:
    """Import tensorboardX (and torch with it, ~1.1 s) on a thread now, while the sweep decodes its splits
    (this driver mostly waits on Ray then), instead of when :func:`result_loggers` builds Tune's TensorBoard
    logger, between the decode and the first trial's creation (py-spy of the main job's sweep, quiet: 1.6 s
    of the driver's 2.4 s there; the first trials' actors were created ~0.6 s sooner with it, issue 25).
    Tried beside it and dropped: Ray workers importing torch and raylm for the trial actors to reuse. On 2
    cores they slowed the decode from 1.1 to 4.6 s and were still importing when Tune created the actors,
    which started processes of their own."""
    def load() -> None:
        with suppress(ImportError):  # not installed: Tune's logger warns about it when it is built
            importlib.import_module("tensorboardX")

    threading.Thread(target=load, daemon=True, name="raylm-import-tensorboardx").start()


def _warm_augment_clock(cfg: RaylmConfig) -> None:
    """Start the cluster's augmentation epoch clock (a detached actor, ``raylm.data.augment``) now, while
    Tune starts, instead of inside the first trials, whose first epoch would wait on its process."""
    from raylm.data.augment import is_identity, policy_for, start_clock

    if not is_identity(policy_for(cfg)) or cfg.augment.schedule or any(p.startswith("augment.") for p in cfg.tune.space):
        start_clock()


def _decode_once(cfg: RaylmConfig):
    """The sweep's splits decoded (and materialized with ``data.materialize``) once, here, for every
    trial; None when the space searches ``data.*``, so that each trial decodes its own."""
    if any(path.startswith("data.") for path in cfg.tune.space):
        return None
    from raylm.data import decode_splits
    from raylm.tune.population import hold_for_population

    return hold_for_population(cfg, decode_splits(cfg))


def load_sweep_config(tune_dir: Path) -> RaylmConfig:
    path = Path(tune_dir) / SWEEP_CONFIG
    if not path.is_file():
        raise ConfigError(f"--resume: {tune_dir} holds no raylm sweep ({SWEEP_CONFIG} missing)")
    return validate_config(json.loads(path.read_text()))


def sweep_dir(path: str | os.PathLike[str]) -> Path:
    """A run directory or its ``tune/`` directory -> the ``tune/`` directory."""
    path = Path(path).expanduser().resolve()
    return path if (path / SWEEP_CONFIG).is_file() or path.name == "tune" else path / "tune"


def sweep(cfg: RaylmConfig | None = None, *, resume: str | os.PathLike[str] | None = None,
          export: str | None = None, verbose: bool = True) -> SweepResult:
    """Run (or, with ``resume=<run or tune dir>``, continue) the sweep; write results; export.

    A resumed sweep keeps finished trials and reruns only the unfinished ones. With URI storage the
    sweep's tables are written in the run's local workspace and committed when it ends; Tune's
    experiment and every trial's directory go to the bucket (docs/storage.md).
    """
    from raylm.storage import run_workspace
    from raylm.tracking import tracked_run

    # Tracking on: the sweep is one MLflow run (the pipeline's, inside a pipeline) and each trial a child of it.
    if resume is None and cfg is not None:
        from raylm.tune.space import check_space

        check_space(cfg)  # a bad space is refused before an MLflow run is opened
        with run_workspace(cfg.run_location), tracked_run(cfg, "sweep") as run:
            return _sweep(cfg, resume=None, export=export, verbose=verbose, run=run)
    with tracked_run(load_sweep_config(sweep_dir(resume)), "sweep") as run:
        return _sweep(cfg, resume=resume, export=export, verbose=verbose, run=run)


def _sweep(cfg: RaylmConfig | None, *, resume: str | os.PathLike[str] | None, export: str | None,
           verbose: bool, run=None) -> SweepResult:
    import ray
    from ray import tune

    from raylm.capacity import check_run_paths
    from raylm.storage import publish_workspace
    from raylm.runtime import ensure_ray, quiet_data_progress
    from raylm.tune.measure_on import start_probe
    from raylm.tune.progress import SweepProgress
    from raylm.tune.results import (MixedHardwareError, best_row, export_artifacts, format_table, fronts_by_hardware,
                                    pareto_front, plot_front, trial_rows, write_results)
    from raylm.tune.space import check_space, tune_param_space

    # A trial's objectives arrive only in its last report; its epoch reports (read by ASHA) lack them.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    if resume is not None:
        tune_dir = sweep_dir(resume)
        cfg = load_sweep_config(tune_dir)
    else:
        if cfg is None:
            raise ValueError("sweep() needs a config or resume=")
        check_space(cfg)
        tune_dir = cfg.run_dir / "tune"
        if (tune_dir / SWEEP_CONFIG).exists():
            raise ConfigError(f"train.name: {tune_dir} already holds a sweep; continue it with "
                              f"--resume {cfg.run_dir} or choose another train.name")
    ensure_ray()
    _import_tensorboard_logger()
    check_run_paths(cfg)  # node-local paths on a multi-node cluster: refused before any Ray work
    quiet_data_progress()
    _check_state_api(cfg)
    probe = start_probe(cfg)  # before any trial: a tune.measure_on nobody can host is refused here
    _warm_augment_clock(cfg)
    base = cfg.to_dict()
    progress = [SweepProgress(cfg.tune.num_samples, cfg.tune.max_trial_epochs)] if verbose else []  # raylm's console line for the sweep
    experiment, filesystem = experiment_location(cfg, tune_dir)
    if resume is not None:
        tuner = tune.Tuner.restore(experiment, trainable=_trainable(cfg, tune_dir, probe, run, limit=_limit_or_one(cfg)),
                                   resume_errored=True,
                                   storage_filesystem=filesystem)
    else:
        limit = concurrency(cfg)  # checked before decoding or writing anything
        tune_config, stopper = _tuner_parts(cfg, limit)
        trainable = _trainable(cfg, tune_dir, probe, run, limit=limit)
        tune_dir.mkdir(parents=True, exist_ok=True)
        tmp = tune_dir / f".{SWEEP_CONFIG}.tmp"
        tmp.write_text(json.dumps(base, indent=2))
        os.replace(tmp, tune_dir / SWEEP_CONFIG)
        # URI storage: committed now, not only when the sweep ends, so that a rerun after the driver is
        # lost finds a sweep to continue (Tune's state is in the bucket already).
        publish_workspace(cfg.run_location)
        tuner = tune.Tuner(
            trainable, param_space=tune_param_space(cfg), tune_config=tune_config,
            run_config=tune.RunConfig(name=posixpath.basename(experiment), storage_path=posixpath.dirname(experiment),
                                      storage_filesystem=filesystem, stop=stopper,
                                      callbacks=[*result_loggers(), *progress], verbose=1 if verbose else 0,
                                      # A trial keeps its own checkpoints (train/); Tune's would be a second copy.
                                      checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)))
    # Resumed: the loggers come back from tuner.pkl, and a sweep written before result_loggers()
    # listed JSON there has only Tune's defaults to write its result.json.
    try:
        with only_these_loggers() if resume is None else nullcontext(), _tune_ctrl_c() as ctrl_c:
            grid = tuner.fit()
    finally:
        if probe is not None:
            ray.kill(probe)

    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    if ctrl_c["seen"] or unfinished:
        # Tune catches Ctrl-C itself: it saves the experiment and returns as if the sweep were done. What
        # it returns is no result: no tables or schedule from it, and the run is recorded interrupted
        # (raylm/report/runs.py), with how to go on.
        from raylm.errors import Interrupted

        # No count of unfinished trials: after Tune's clean-up a trial stopped mid-run reads TERMINATED
        # like one that finished (a user's interrupted sweep of 4 said "0 of 4 unfinished" with 2 left).
        raise Interrupted(f"sweep interrupted, its state saved; continue it with: raylm tune --resume "
                          f"{cfg.run_location} (a pipeline: run its command again)")
    objectives = list(cfg.tune.objectives)
    rows = trial_rows(grid, list(cfg.tune.space))
    if filesystem is not None:  # Tune names a trial's directory by its path in the bucket: records name URIs
        for row in rows:
            row["trial_dir"] = f"{cfg.run_location.scheme}://{row['trial_dir']}" if row.get("trial_dir") else None
    try:
        front, best, mixed = pareto_front(rows, objectives), best_row(rows, objectives), None
    except MixedHardwareError as err:
        # Written per hardware so the sweep's work is kept; refused below, after the files.
        front, best, mixed = fronts_by_hardware(rows, objectives), None, err
    files = write_results(tune_dir, rows, front, best, objectives)
    if cfg.tune.scheduler in ("pbt", "pb2"):  # the learned schedule, beside the tables (docs/pbt.md)
        from raylm.tune.schedule import write_schedule
        from raylm.tune.trial import TRIAL_RECORD

        schedule = write_schedule(tune_dir, best, cfg.tune.scheduler, record_name=TRIAL_RECORD)
        if schedule is not None:
            files["schedule"] = schedule
    exported = export_artifacts(cfg.run_dir, rows, front, best, export or cfg.tune.export,
                                options=cfg.train.storage_options)
    if verbose:
        print(format_table(rows, front, best), flush=True)
    # The answer (front, best, tables) is out; the plot (matplotlib's import and a render, ~3 s) comes after.
    # A sweep that measured no trial (trial.measures_trials) has no front to draw.
    measured = [r for r in rows if r.get("latency_ms") is not None]
    plot = plot_front(tune_dir / "pareto.png", measured, front) if measured else None
    if plot is not None:
        files["plot"] = plot
    _log_sweep(run, files, best, objectives)
    if mixed is not None:
        raise mixed
    return SweepResult(tune_dir, objectives, rows, front, best, files, exported)


@contextmanager
def _tune_ctrl_c():
    """``{"seen": bool}``, set when the block ends: whether Tune's own Ctrl-C handler fired in it. Tune
    installs that handler in ``fit`` and puts the previous one back only when it fires (a finished fit
    leaves it installed), so the previous handler back in place means a Ctrl-C (or SIGUSR1) ended the
    fit. Trial statuses alone missed it: an interrupted grid sweep of one trial at a time (the S3 resume
    test's) counted no started trial unfinished. The previous handler is put back either way."""
    seen = {"seen": False}
    if threading.current_thread() is not threading.main_thread() or os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") != "0":
        yield seen  # Tune installs no handler here
        return
    before = signal.getsignal(signal.SIGINT)
    usr1 = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
    try:
        yield seen
    finally:
        seen["seen"] = signal.getsignal(signal.SIGINT) is before
        signal.signal(signal.SIGINT, before)
        if usr1 is not None:  # Tune installs the same handler for SIGUSR1 and leaves it too
            signal.signal(signal.SIGUSR1, usr1)


def _log_sweep(run, files: dict[str, Path], best: dict[str, Any] | None, objectives: list[str]) -> None:
    """Tracking on: the sweep's tables and Pareto plot, and its best trial's objectives, into its run."""
    from raylm.tracking import log_files, log_metrics

    log_files(run, list(files.values()))
    log_metrics(run, {f"best_{name}": (best or {}).get(name) for name in objectives})
