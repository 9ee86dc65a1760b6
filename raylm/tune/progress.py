"""The sweep's line on raylm's console: trials completed / stopped / failed of ``tune.num_samples``
(or, for a budgeted search, ``tune.max_trial_epochs``: trial-epochs trained of the budget, since it samples
trials until the budget is spent and ``num_samples`` is only a cap), how many run now, and the best
compressed accuracy so far. A Tune callback runs in the driver."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from raylm.console import Bar, current
from raylm.tune.budget import is_epoch_report


class SweepProgress(Callback):
    def __init__(self, num_samples: int, epoch_budget: int | None = None) -> None:
        self.num_samples, self.epoch_budget = num_samples, epoch_budget
        self.epochs = 0  # trial-epochs reported (a budgeted sweep's progress)
        self.running: set[str] = set()
        self.counts = {"completed": 0, "stopped": 0, "error": 0}
        self.interrupted = 0  # trials a Ctrl-C ended mid-training (not ASHA's "stopped")
        self.best: tuple[float, str] | None = None
        self._bar: Bar | None = None
        self._counted_restored = False

    # Tune pickles its run config (callbacks included) into tuner.pkl for --resume; the bar holds
    # the console's streams, so it is made on first use in whichever process shows it.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_bar"} | {"_bar": None}

    @property
    def bar(self) -> Bar:
        if self._bar is None:
            self._bar = (current().bar("sweep", self.epoch_budget, "trial-epochs") if self.epoch_budget
                         else current().bar("sweep", self.num_samples, "trials"))
        return self._bar

    def _info(self) -> str:
        best = f"best acc {self.best[0]:.3f} ({self.best[1]})" if self.best else "best acc -"
        errors = f"error {self.counts['error']}  " if self.counts["error"] else ""
        cut = f"interrupted {self.interrupted}  " if self.interrupted else ""
        return (f"running {len(self.running)}  completed {self.counts['completed']}  "
                f"stopped {self.counts['stopped']}  {errors}{cut}{best}")

    def _show(self, say: bool) -> None:
        done = self.epochs if self.epoch_budget else sum(self.counts.values())
        self.bar.update(done, self._info(), say=say)

    def on_step_begin(self, iteration, trials, **info) -> None:
        # A resumed sweep's trials that had already ended fire no event: counted once, at its first step
        # (its line began "completed 1 stopped 0" though the sweep had stopped two trials before).
        if not self._counted_restored:
            self._counted_restored = True
            if any(t.status in ("TERMINATED", "ERROR") for t in trials):
                self._count(trials)
                self._show(False)

    def _count(self, trials, cut_short: set[str] = frozenset()) -> None:
        """completed / stopped (by the scheduler) / error from the trials' states; ``cut_short``: the trials
        running when a Ctrl-C ended the sweep, which Tune marks terminated too."""
        self.counts = {"completed": 0, "stopped": 0, "error": 0}
        self.interrupted = 0
        for trial in trials:
            if trial.status == "ERROR":
                self.counts["error"] += 1
            elif trial.status == "TERMINATED":
                last = trial.last_result or {}
                if last.get("compressed"):
                    self.counts["completed"] += 1
                elif trial.trial_id in cut_short:
                    self.interrupted += 1
                else:
                    self.counts["stopped"] += 1
                if last.get("compressed") and isinstance(last.get("accuracy"), (int, float)) and (
                        self.best is None or last["accuracy"] > self.best[0]):
                    self.best = (float(last["accuracy"]), trial.trial_id)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running.add(trial.trial_id)
        self._show(False)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        # Epoch reports (for ASHA) lack the compressed accuracy; a trial's last report has it.
        if result.get("compressed") and isinstance(result.get("accuracy"), (int, float)):
            if self.best is None or result["accuracy"] > self.best[0]:
                self.best = (float(result["accuracy"]), trial.trial_id)
        if is_epoch_report(result):
            self.epochs += 1
        self._show(False)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self.counts["completed" if (trial.last_result or {}).get("compressed") else "stopped"] += 1
        self._show(True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self.counts["error"] += 1
        self._show(True)

    def on_experiment_end(self, trials, **info) -> None:
        # Ended with a trial still running (none completes after Tune's loop stops) or never started:
        # Tune's loop stopped on a Ctrl-C, not because the sweep was done.
        from ray.tune.experiment import Trial

        stopped = bool(self.running) or any(t.status in (Trial.PENDING, Trial.PAUSED) for t in trials)
        cut_short = set(self.running) if stopped else set()
        self.running.clear()
        # Counted from every trial, not from this process's events: a resumed sweep's finished trials
        # fire none (its line read "completed 0" above a table of 2 completed).
        self._count(trials, cut_short)
        self.bar.finish(self._info().replace("running 0  ", ""), ok=not stopped)
