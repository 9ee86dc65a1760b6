"""One trial: a Ray Train run for the sampled config, then its compression, measured.

Two ways to run it, the same result:

- :class:`InProcessTrial`, for a trial that trains on one CPU worker: the trial's own actor trains,
  under Ray Train V2's local mode (``raylm/train/in_process.py``), with no Train controller and no
  worker group; Tune reuses the actor for the next trial. A class trainable, because inside a
  function trainable's Tune session Ray Train's APIs (``get_context``, ``report``, ...) refuse to
  run, local mode included.
- :func:`run_trial`, for a trial asking for several workers or a GPU: Ray 2.60's Train V2 pattern,
  the trial's process is a light driver, the Train workers ask the cluster for their own
  resources, and ``TuneReportCallback`` forwards each epoch.

Either way each epoch is one Tune iteration (ASHA can stop the trial between epochs) and the last
one is the compressed measurement. Inside a sweep the trial starts from the sweep's decoded splits
(``raylm/data/decoded.py``) instead of decoding the data again.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable

from ray import tune

if TYPE_CHECKING:
    from raylm.config import RaylmConfig
    from raylm.data.decoded import DecodedSplits

TRIAL_RECORD = "raylm_trial.json"


def train_and_measure(params: dict[str, Any], *, base: dict[str, Any], trials_dir: str, trial_id: str,
                      decoded: DecodedSplits | None, on_epoch: Callable[[dict[str, Any]], None] | None,
                      probe=None, resume_from: str | None = None) -> dict[str, Any]:
    """Train ``params`` over ``base``, compress the best checkpoint, measure it, record it; the final
    result. ``on_epoch`` given: train in this process and hand it each epoch; else a Ray Train run
    whose epochs reach the calling Tune function trial through ``TuneReportCallback``. ``probe``:
    the sweep's latency probe (``tune.measure_on``), which times the artifact where every trial's is.
    ``resume_from``: a checkpoint directory to continue (a PBT trial restored from its own or a donor's)."""
    from raylm.compress.objectives import compress_and_measure
    from raylm.data.decoded import sharing
    from raylm.storage import publish_workspace, run_workspace, stored
    from raylm.train import build_trainer
    from raylm.train.checkpoint import best_kept, checkpoint_location
    from raylm.tune.measure_on import measure_trial
    from raylm.tune.space import trial_config

    # Not Tune's trial directory: that is a scratch directory on the node, not the run's storage.
    # ``trials_dir`` local: the trial writes there. A URI (``<run>/tune/trials``): Ray Train's checkpoints
    # go straight to ``<trials_dir>/<trial_id>/train/``; the artifact and the record are written in a
    # scratch directory on this node, published to ``<trials_dir>/<trial_id>/`` with a commit marker
    # (written last) when the trial ends, and deleted: the driver, on another node maybe, reads storage only.
    from raylm.tracking import epoch_hook, log_metrics, tracked_run
    from raylm.tune.population import is_population, population_trial_changes

    cfg = trial_config(base, params, storage_path=trials_dir, name=trial_id)
    population = is_population(cfg)
    if population:
        cfg = cfg.override(population_trial_changes(cfg, resume_from))
    # Tracking on: the trial's MLflow run, a child of the sweep's (base names it), reused if Tune reruns it.
    with run_workspace(cfg.run_location) as trial_dir, sharing(decoded), \
            tracked_run(cfg, "trial", stopped=(_Stopped,)) as mlflow_run:
        if on_epoch is not None:
            trainer, _ = build_trainer(cfg, in_process=True, on_report=on_epoch,
                                       tracked=tuple(params) if population else (), on_epoch=epoch_hook(mlflow_run))
        else:
            from ray.tune.integration.ray_train import TuneReportCallback

            trainer, _ = build_trainer(cfg, run_config_overrides={"callbacks": [TuneReportCallback()]},
                                       on_epoch=epoch_hook(mlflow_run))
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        best, trained = best_kept(result.best_checkpoints)
        where = checkpoint_location(best, cfg.train.storage_options)
        checkpoint = best.path if where.is_local else where.uri
        if not measures_trials(cfg, params):  # nothing in this sweep reads an artifact
            measured = {"accuracy": trained["val_accuracy"]}  # no artifact, size or latency
        else:
            measured = compress_and_measure(cfg, checkpoint).model_dump(mode="json")  # Tune's metrics: a dict
            if not cfg.run_location.is_local:
                # Records name where things are for everyone (the artifact's URI), not this node's scratch;
                # the probe (another node maybe) reads it from storage, so it is published first.
                measured["artifact"] = stored(measured["artifact"]).uri
                if probe is not None:
                    publish_workspace(cfg.run_location)
            measured = measure_trial(probe, cfg, measured, checkpoint)
        # "compressed": the trial's final report (its row is "completed"), measured or not.
        final = {"val_accuracy": trained["val_accuracy"], "best_epoch": trained.get("epoch"),
                 "epochs": result.metrics.get("epoch"), **measured, "checkpoint": checkpoint, "compressed": True}
        # The trial's own record beside its checkpoints and artifact: readable without Tune's experiment state.
        log_metrics(mlflow_run, measured, step=int(final["epochs"] or 0))  # the compressed model's measurement
        record: dict[str, Any] = {"params": params, "result": final}
        if population:  # the epochs this trial's weights went through, donors' included (its lineage)
            from raylm.tune.schedule import lineage_of

            record["lineage"] = lineage_of(result, cfg.train.storage_options)
        tmp = trial_dir / f".{TRIAL_RECORD}.tmp"
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, trial_dir / TRIAL_RECORD)
    return final


def measures_trials(cfg: RaylmConfig, params: dict[str, Any]) -> bool:
    """Whether a trial compresses and measures its best checkpoint after its last epoch. Not in a sweep
    that ranks on accuracy alone and exports nothing, over an identity compression recipe (no
    ``compress.*`` searched or set): nothing there reads the artifact, its size or its latencies, and
    the compressed model is the dense one, so the trial's ``accuracy`` is its best checkpoint's
    validation accuracy. Whatever the scheduler: a PBT population's trials all train to the end and
    each paid it (100 slot-seconds of a 164-s search of 8 trials at load ~25); an ASHA search's
    completed trials the same, so both searches of ``benchmarks/pba.py`` skip it alike."""
    from raylm.compress.methods import compresses

    if list(cfg.tune.objectives) != ["accuracy"] or cfg.tune.export != "none":
        return True
    if any(path.startswith("compress.") for path in params):  # a searched recipe: its rows must compare
        return True
    return compresses(cfg.compress, cfg.model.backend)  # the one definition of "changes the dense model"


def run_trial(params: dict[str, Any], *, base: dict[str, Any], trials_dir: str, decoded: DecodedSplits | None = None,
              probe=None) -> None:
    """Tune function trainable (trials on several workers or a GPU). ``params``: ``{dotted path: value}``;
    ``base``: the sweep's config; the trial writes ``<trials_dir>/<trial id>/{train,compress}/``."""
    final = train_and_measure(params, base=base, trials_dir=trials_dir, trial_id=tune.get_context().get_trial_id(),
                              decoded=decoded, on_epoch=None, probe=probe)
    # done=True: Tune marks the trial finished as it processes this very result, so an interrupt
    # right after it cannot leave a measured trial "running" (and rerun on resume).
    tune.report(final | {"done": True})


class _Stopped(Exception):
    """Raised in the training thread when Tune ends the trial (ASHA's stop, actor reuse, shutdown)."""


class InProcessTrial(tune.Trainable):
    """Tune class trainable for trials on one CPU worker: the training runs on a thread of this actor
    and waits at each epoch's report until Tune asks for the next step, so stopping between epochs
    costs no extra epoch. ``reset_config`` ends the old thread and starts the next trial's."""

    def setup(self, config: dict[str, Any], *, base: dict[str, Any], trials_dir: str,
              decoded: DecodedSplits | None = None, probe=None) -> None:
        from raylm.train.loop import warm_optimizer_import

        warm_optimizer_import()  # the first step's torch._dynamo import, overlapped with the trial's start
        self._sweep = {"base": base, "trials_dir": trials_dir, "decoded": decoded, "probe": probe}
        self._held: list[str] = []  # restored checkpoints' copies (PBT)
        self._prepare(config)

    def _prepare(self, params: dict[str, Any]) -> None:
        # The thread starts at the first step(), not here: Tune restores a paused or exploiting PBT
        # trial (load_checkpoint) after setup/reset_config, and training must start from that checkpoint.
        self._params, self._thread, self._restore_dir = dict(params), None, None
        self._last_checkpoint: str | None = None  # the newest epoch checkpoint this trial persisted
        self._results: queue.Queue = queue.Queue()
        self._resume = threading.Semaphore(0)
        self._paused = self._stopping = False

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._train, args=(self._params, self.trial_id, self._restore_dir),
                                        daemon=True, name=f"raylm-trial-{self.trial_id}")
        self._thread.start()

    def _train(self, params: dict[str, Any], trial_id: str, resume_from: str | None) -> None:
        try:
            self._results.put(("final", train_and_measure(params, trial_id=trial_id, on_epoch=self._hand_over,
                                                          resume_from=resume_from, **self._sweep)))
        except _Stopped:
            pass
        except BaseException as err:  # noqa: BLE001 - step() re-raises it: Tune records the trial's error
            self._results.put(("error", err))

    def _hand_over(self, metrics: dict[str, Any]) -> None:
        self._last_checkpoint = metrics.get("checkpoint_path", self._last_checkpoint)
        self._results.put(("epoch", metrics | {"checkpointed": "checkpoint_path" in metrics}))
        self._resume.acquire()
        if self._stopping:
            raise _Stopped

    def step(self) -> dict[str, Any]:
        if self._thread is None:
            self._start()
        if self._paused:
            self._paused = False
            self._resume.release()
        kind, payload = self._results.get()
        if kind == "error":
            raise payload
        if kind == "final":
            # done=True: Tune marks the trial finished as it processes this very result, so an interrupt
            # right after it cannot leave a measured trial "running" (and rerun on resume).
            return payload | {"done": True}
        self._paused = True
        return payload

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """PBT (a perturbation, a pause): the checkpoint of the epoch just reported, copied for Tune.
        The training thread waits in that report, so it is the trial's state now (weights, optimizer,
        the epoch history that records its lineage)."""
        from raylm.tune.population import copy_checkpoint

        if self._last_checkpoint is None:
            raise RuntimeError(f"trial {self.trial_id}: Tune asked for a checkpoint before the first epoch's")
        copy_checkpoint(self._last_checkpoint, checkpoint_dir)
        # None: the checkpoint is the directory (a returned dict would be what load_checkpoint gets)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """PBT restores a paused trial from its own checkpoint, an exploiting one from its donor's:
        the next step() trains from there with this trial's (possibly mutated) config. Tune may delete
        ``checkpoint_dir`` after this call, so it is copied first."""
        import tempfile

        from raylm.tune.population import copy_checkpoint

        self._end_thread(timeout_s=30)
        held = tempfile.mkdtemp(prefix=f"raylm-restore-{self.trial_id}-")
        self._held.append(held)  # deleted in cleanup(): training has loaded it by then
        copy_checkpoint(checkpoint_dir, held)
        params = self._params
        self._prepare(params)
        self._restore_dir = held

    def _end_thread(self, timeout_s: float) -> bool:
        if self._thread is None:
            return True
        self._stopping = True
        self._paused = False
        self._resume.release()  # a thread waiting in a report (or reaching the next one) sees _stopping and ends
        self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        # Tune reuses the actor after a trial finished or was stopped at a report, so the thread ends
        # at once (tests/test_tune.py counts one actor over stopped and finished trials). If it somehow
        # does not, False makes Ray 2.60 error the new trial (it does not fall back to a fresh actor);
        # --resume reruns it.
        if not self._end_thread(timeout_s=30):
            return False
        self._prepare(new_config)
        return True

    def cleanup(self) -> None:
        # The actor is going away (sweep over, or Ctrl-C mid-epoch): no reason to wait for the epoch.
        import shutil

        self._end_thread(timeout_s=5)
        for held in self._held:
            shutil.rmtree(held, ignore_errors=True)
