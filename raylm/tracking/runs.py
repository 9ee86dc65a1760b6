"""One MLflow run per raylm run directory: opened on the driver, reused by whoever comes back to the
same directory (a restarted worker group, a rerun after a crash, the pipeline's sweep and retrain),
logged to by the worker ranked 0 through a hook.

The run's id is kept in ``<run>/mlflow_run.json``, so a driver that comes back continues the same
MLflow run instead of starting a duplicate (ray#48664); a restarted worker group gets the id with
its loop config and never creates a run at all. Nothing here imports MLflow until tracking is on.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylm.config import RaylmConfig

RUN_FILE = "mlflow_run.json"
# A training epoch's report carries these too; they are bookkeeping (the step, wall clock), not metrics.
NOT_METRICS = frozenset({"epoch", "step", "time", "train_started"})
_PARAMS_PER_CALL = 100  # MLflow's log_batch limit
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackedRun:
    """An MLflow run: what a worker needs to log to it (plain data: travels in a loop config)."""

    uri: str
    run_id: str
    experiment_id: str


_OPEN: dict[str, TrackedRun] = {}  # run location URI -> the run open in this process (nested stages share it)


# MLflow's HTTP client retries 7 times with a backoff factor of 2 (and a 120 s timeout): a server that
# went down held each epoch's logging call ~4 minutes, and one down at the start held the run as long
# before it failed. Two quick retries (about 3 s); an exported value is kept.
HTTP_RETRY_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
DOWN_RETRY_S = 30.0  # after a failed call, epochs queue their metrics this long before the server is tried again
_UNSENT: dict[str, list] = {}  # run id -> metrics not logged yet (this process)
_DOWN_UNTIL: dict[str, float] = {}  # tracking URI -> monotonic time before which it is not tried again
_METRICS_PER_CALL = 1000  # MLflow's log_batch limit


@functools.lru_cache(maxsize=8)
def client(uri: str):
    """An ``MlflowClient`` for ``uri`` (tracking and registry alike), one per process."""
    # raylm's console owns stdout (a verb's answer): no tqdm bars, no "View run" line when a run ends.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for key, value in HTTP_RETRY_ENV.items():
        os.environ.setdefault(key, value)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The resolved config as ``{dotted.path: value}``, the way overrides and Tune's space name fields."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
    return out


def _experiment_id(mlflow_client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(name)
    except MlflowException:  # created meanwhile by another driver
        return mlflow_client.get_experiment_by_name(name).experiment_id


def _saved_run(cfg: RaylmConfig, path: Path) -> TrackedRun | None:
    """The run this directory already has on this tracking server, if it still exists there."""
    from mlflow.exceptions import MlflowException

    try:
        saved = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(saved, dict) or saved.get("tracking_uri") != cfg.tracking.mlflow.uri:
        return None  # another server (or none) then: this one gets its own run
    try:
        info = client(cfg.tracking.mlflow.uri).get_run(str(saved["run_id"])).info
    except (MlflowException, KeyError):
        return None
    if info.lifecycle_stage != "active":
        return None
    return TrackedRun(cfg.tracking.mlflow.uri, info.run_id, info.experiment_id)


def _open(cfg: RaylmConfig, kind: str) -> TrackedRun:
    from mlflow.entities import Param

    mc = cfg.tracking.mlflow
    mlflow_client = client(mc.uri)
    path = cfg.run_dir / RUN_FILE
    run = _saved_run(cfg, path)
    if run is not None:
        mlflow_client.update_run(run.run_id, status="RUNNING")
        log.info("mlflow: continuing run %s (%s)", run.run_id, path)
        return run
    tags = {"raylm.kind": kind, "raylm.run_location": cfg.run_location.uri, "mlflow.source.name": f"raylm {kind}"}
    if mc.parent_run_id:
        tags["mlflow.parentRunId"] = mc.parent_run_id
    info = mlflow_client.create_run(_experiment_id(mlflow_client, mc.experiment), run_name=str(cfg.train.name),
                                    tags=tags).info
    params = [Param(key[:250], value[:6000]) for key, value in sorted(flat_params(cfg.to_dict()).items())]
    for start in range(0, len(params), _PARAMS_PER_CALL):
        mlflow_client.log_batch(info.run_id, params=params[start:start + _PARAMS_PER_CALL])
    run = TrackedRun(mc.uri, info.run_id, info.experiment_id)
    # Written once the run exists and has its params: a driver that comes back reuses it.
    from raylm.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"tracking_uri": mc.uri, "run_id": run.run_id,
                                        "experiment_id": run.experiment_id, "kind": kind}, indent=2))
    return run


@contextmanager
def tracked_run(cfg: RaylmConfig, kind: str, *, stopped: tuple[type[BaseException], ...] = ()) -> Iterator[TrackedRun | None]:
    """The MLflow run of ``cfg``'s run directory for the duration of a stage (None: tracking is off).
    Opened (or continued) on entry with the resolved config as params; marked FINISHED, FAILED, or
    KILLED (Ctrl-C, or one of ``stopped``, e.g. a trial ASHA stopped) by the outermost holder.
    ``cfg.run_dir`` must be reachable (with URI storage: inside the run's workspace)."""
    if cfg.tracking.mlflow.uri is None:
        yield None
        return
    key = cfg.run_location.uri
    if key in _OPEN:  # the pipeline's sweep and retrain log into the pipeline's run
        yield _OPEN[key]
        return
    run = _OPEN[key] = _open(cfg, kind)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except (KeyboardInterrupt, *stopped):
        status = "KILLED"
        raise
    finally:
        del _OPEN[key]
        flush_metrics(run)  # this process's queue (a trial's or an in-process run's epochs, a compressed measurement)
        try:
            client(run.uri).set_terminated(run.run_id, status)
        except Exception as err:  # noqa: BLE001 - the stage's own outcome matters more than the run's status
            log.warning("mlflow: run %s not marked %s: %s", run.run_id, status, err)


def check_server(cfg: RaylmConfig) -> None:
    """A tracking server that does not answer is refused before Ray starts (``ConfigError`` naming the
    field): with it down the run used to wait minutes in MLflow's retries, then fail with nothing trained."""
    import urllib.error
    import urllib.request

    from raylm.config import ConfigError

    uri = cfg.tracking.mlflow.uri
    if uri is None or not uri.startswith(("http://", "https://")):
        return  # a store MLflow opens itself (file, sqlite, a database) or Databricks: nothing to ask here
    try:
        urllib.request.urlopen(f"{uri}/health", timeout=CHECK_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # it answers (an auth proxy, a server without /health): the run's own calls say more
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(f"tracking.mlflow.uri: no MLflow server answers at {uri} ({reason}); start one "
                          "(docs/mlflow.md) or leave tracking.mlflow.uri unset") from None


CHECK_TIMEOUT_S = 5.0


def run_of(cfg: RaylmConfig) -> TrackedRun | None:
    """The MLflow run ``cfg``'s run directory already has (after its stages closed it), else None."""
    if cfg.tracking.mlflow.uri is None:
        return None
    return _OPEN.get(cfg.run_location.uri) or _saved_run(cfg, cfg.run_dir / RUN_FILE)


def log_epoch(run: TrackedRun, metrics: dict[str, Any]) -> None:
    """A training epoch's numeric metrics at step = epoch (1-based). The hook the worker ranked 0
    calls (``train.build_trainer(on_epoch=...)``); a server that is down costs a warning, not the run."""
    step = int(metrics["epoch"])
    log_metrics(run, {k: v for k, v in metrics.items() if k not in NOT_METRICS}, step=step,
                at=float(metrics.get("time") or time.time()))


class EpochHook:
    """``build_trainer(on_epoch=...)`` for a run (picklable: it travels to the worker ranked 0): each epoch
    :func:`log_epoch`; ``close()`` when training ends sends what a down server left queued in that process,
    or says how much was not sent (it used to be dropped without a word under a FINISHED run)."""

    def __init__(self, run: TrackedRun) -> None:
        self.run = run

    def __call__(self, metrics: dict[str, Any]) -> None:
        log_epoch(self.run, metrics)

    def close(self) -> None:
        flush_metrics(self.run)


def epoch_hook(run: TrackedRun | None) -> EpochHook | None:
    """The epoch hook for ``run``; None when tracking is off."""
    return None if run is None else EpochHook(run)


def flush_metrics(run: TrackedRun) -> None:
    """Send ``run``'s queued metrics now, whatever the retry window; on failure a warning counts what is lost
    (the values stay in raylm's own records: each checkpoint's history)."""
    queued = _UNSENT.get(run.run_id)
    if not queued:
        return
    try:
        _send(run, queued)
    except Exception as err:  # noqa: BLE001 - the stage's own outcome matters more than the run's metrics
        log.warning("mlflow: %d metric values of run %s were not sent: the server did not answer when the stage "
                    "ended (%s); raylm's own records keep them (the checkpoints' history, trials.json)",
                    len(queued), run.run_id, " ".join(str(err).split())[:200])
        queued.clear()
        return
    _DOWN_UNTIL.pop(run.uri, None)


def nested_under(cfg: RaylmConfig, run: TrackedRun | None) -> RaylmConfig:
    """``cfg`` whose own MLflow run will be a child of ``run`` (a sweep's trials); ``cfg`` when off."""
    return cfg if run is None else cfg.override({"tracking.mlflow.parent_run_id": run.run_id})


def log_metrics(run: TrackedRun | None, metrics: dict[str, Any], *, step: int = 0, at: float | None = None) -> None:
    """The numeric values of ``metrics`` (others skipped) into ``run``; no-op for None."""
    if run is None:
        return
    from mlflow.entities import Metric

    stamp = int((at or time.time()) * 1000)
    values = [Metric(key, float(value), stamp, step) for key, value in metrics.items()
              if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)]
    if not values:
        return
    # Metrics a down server missed wait here (this process) and go with the next batch that reaches it;
    # for DOWN_RETRY_S after a failure an epoch only queues, so training does not wait on the server.
    queued = _UNSENT.setdefault(run.run_id, [])
    queued.extend(values)
    if time.monotonic() < _DOWN_UNTIL.get(run.uri, 0.0):
        log.warning("mlflow: metrics at step %d queued for run %s (the server was down %.0f s ago; %d values waiting)",
                    step, run.run_id, DOWN_RETRY_S - (_DOWN_UNTIL[run.uri] - time.monotonic()), len(queued))
        return
    try:
        _send(run, queued)
    except Exception as err:  # noqa: BLE001 - see log_epoch
        _DOWN_UNTIL[run.uri] = time.monotonic() + DOWN_RETRY_S
        log.warning("mlflow: metrics at step %d not logged to run %s yet (%d values queued, sent with a later "
                    "epoch's): %s", step, run.run_id, len(queued), " ".join(str(err).split())[:300])
        return
    _DOWN_UNTIL.pop(run.uri, None)



def _send(run: TrackedRun, queued: list) -> None:
    """``queued`` into ``run``, in log_batch-sized calls; what was sent leaves the list (a failure keeps the rest)."""
    while queued:
        client(run.uri).log_batch(run.run_id, metrics=queued[:_METRICS_PER_CALL])
        del queued[:_METRICS_PER_CALL]


def log_files(run: TrackedRun | None, paths: list[Path | str], artifact_path: str | None = None) -> list[str]:
    """The files of ``paths`` that exist, as artifacts of ``run``; the names logged."""
    if run is None:
        return []
    logged = []
    for path in map(Path, paths):
        if path.is_file():
            try:
                client(run.uri).log_artifact(run.run_id, str(path), artifact_path)
            except Exception as err:  # noqa: BLE001 - a server down as a stage ends cost the whole pipeline
                log.warning("mlflow: %s not logged to run %s (%s); it stays in the run directory",
                            path.name, run.run_id, " ".join(str(err).split())[:200])
                continue
            logged.append(path.name)
    return logged
