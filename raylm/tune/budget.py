"""``tune.max_trial_epochs``: a random search that samples trials until its trials have trained a
total number of epochs (trial-epochs), the budget a population sweep spends (``num_samples x
epochs``), so that a fixed-policy search and a PBT search compare at equal search (docs/pbt.md).

Never more than the budget: every epoch a trial is about to train is reserved first. A new trial
reserves its first epoch when the search generator creates it; a trial that reports an epoch may
train the next one only if the epochs trained plus those reserved by other trials leave room, else
Tune's stopper ends it there (like an ASHA stop: its row is ``stopped``). A trial's last report (its
compressed measurement) is not an epoch. ASHA may stop a trial after it reserved its next epoch:
the reservation is released when Tune tells the generator the trial completed. While a trial waits
in its report, Tune asks for its next step only after the stopper has answered (raylm's in-process
trial trains an epoch per ``step()``), so no epoch is trained unreserved.

The count lives in the driver (Tune's controller calls both parts there). Tune pickles the two halves
apart: the stopper once, with the run's config at the start (``tuner.pkl``), the generator (and the
count it holds) at each experiment checkpoint. Restored, both unpickle to one object, which takes the
newer count, so a resumed sweep goes on from the epochs counted at its last checkpoint instead of
counting the budget again from zero (epochs trained after that checkpoint count again: a resumed
sweep may end a few epochs short of the budget, never past it by more than those).
"""

from __future__ import annotations

import uuid
import weakref
from typing import Any

from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.stopper import Stopper

# This process's budgets by key: an unpickled copy of a budget already here becomes that budget.
_LIVE: weakref.WeakValueDictionary[str, EpochBudget] = weakref.WeakValueDictionary()


def _one_budget(key: str, state: dict[str, Any]) -> EpochBudget:
    """Unpickling an :class:`EpochBudget`: the one with ``key`` in this process, brought up to ``state``'s
    count when that is newer (a restored sweep's generator checkpoint after its start-time stopper)."""
    budget = _LIVE.get(key)
    if budget is None:
        budget = EpochBudget.__new__(EpochBudget)
        budget.__dict__.update(state)
        _LIVE[key] = budget
    elif state["trained"] > budget.trained:
        budget.__dict__.update(state)
    return budget


def is_epoch_report(result: dict[str, Any]) -> bool:
    """Whether a trial's report is an epoch's (what the budget counts), not its compressed measurement
    or Tune's own bookkeeping."""
    return not result.get("compressed") and "epoch" in result


class EpochBudget(Stopper):
    """Tune's stopper half of the budget; :class:`BudgetedGenerator` is the other half."""

    def __init__(self, budget: int, epochs: int):
        self.budget, self.epochs = int(budget), int(epochs)
        self.key = uuid.uuid4().hex
        _LIVE[self.key] = self
        self.trained = 0  # epochs reported by every trial so far
        self.reserved: set[str] = set()  # trials allowed to train one more epoch, not reported yet

    def __reduce__(self):
        return _one_budget, (self.key, {**self.__dict__, "reserved": set(self.reserved)})

    def room(self) -> int:
        return self.budget - self.trained - len(self.reserved)

    def reserve(self, trial_id: str) -> bool:
        if self.room() <= 0:
            return False
        self.reserved.add(trial_id)
        return True

    def release(self, trial_id: str) -> None:
        self.reserved.discard(trial_id)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if not is_epoch_report(result):
            return False
        self.reserved.discard(trial_id)
        self.trained += 1
        if int(result["epoch"]) >= self.epochs:
            return False  # its next report is its measurement: nothing to reserve
        return not self.reserve(trial_id)  # no room for its next epoch: it ends here

    def stop_all(self) -> bool:
        return False  # running trials end at their own next report; Tune ends when the generator is finished


class BudgetedGenerator(BasicVariantGenerator):
    """Tune's random/grid generator that creates a trial only while the budget has room for its first
    epoch, and is finished once every epoch of the budget was trained (``tune.num_samples`` caps the
    trials as before)."""

    def __init__(self, *args, budget: EpochBudget, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget = budget

    def next_trial(self):
        if self.budget.room() <= 0:
            return None
        trial = super().next_trial()
        if trial is not None:
            self.budget.reserve(trial.trial_id)
        return trial

    def is_finished(self) -> bool:
        return super().is_finished() or self.budget.trained >= self.budget.budget

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.budget.release(trial_id)  # stopped by ASHA (or errored) with an epoch reserved
        super().on_trial_complete(trial_id, result=result, error=error)
