"""``tune.scheduler: pbt | pb2``: Ray Tune's Population Based Training (and PB2) over ``tune.space``.

Population Based Augmentation (Ho et al. 2019, arcelien/pba): the population's trials train side by
side (or in turns, when the cluster holds fewer than all); every ``tune.perturbation_interval``
epochs a trial in the bottom ``tune.quantile_fraction`` copies a top trial's checkpoint (weights,
optimizer state, epoch history) and continues with a mutation of that trial's config (exploit and
explore). The mutable keys are ``tune.space``'s (checked in ``raylm.config.tune.check_population``).

How a trial takes part (raylm/tune/trial.py, ``InProcessTrial``):

- each epoch is one Tune iteration, so ``time_attr=training_iteration`` counts epochs;
- the trial checkpoints at every perturbation epoch (``train.checkpoint_every`` divides the interval);
  Tune's ``save`` copies that checkpoint, Tune's ``restore`` (a pause or an exploit) restarts training
  from the copy with the trial's current config: the augmentation stage and the lr of the next epoch
  are the new ones, the weights and optimizer state the donor's;
- every epoch records the values it trained with and which trial trained it, so a trial's final
  checkpoint history is its lineage's schedule (raylm/tune/schedule.py).
"""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path
from typing import Any

from raylm.config import RaylmConfig
from raylm.config.tune import POPULATION_SCHEDULERS


def is_population(cfg: RaylmConfig) -> bool:
    return cfg.tune.scheduler in POPULATION_SCHEDULERS


def hold_for_population(cfg: RaylmConfig, decoded):
    """The sweep's decoded splits, held in memory as numpy columns too when the sweep is a population
    whose trials train in their own process and the set fits (raylm/data/arrays.py). Taking turns, a
    population trial restarts at every perturbation; from memory a restart starts no Ray Data
    pipeline, and no epoch executes one either."""
    from raylm.train import trains_in_process

    if not is_population(cfg) or not trains_in_process(cfg):
        return decoded
    from raylm.data.arrays import hold_in_memory

    return hold_in_memory(decoded, cfg)


def population_trial_changes(cfg: RaylmConfig, resume_from: str | None) -> dict[str, Any]:
    """A population trial's config changes: a checkpoint at every perturbation epoch (Tune saves the
    newest one when it exploits or pauses), and the checkpoint it continues from, if restored."""
    every = math.gcd(cfg.train.checkpoint_every, cfg.tune.perturbation_interval)
    return {"train.checkpoint_every": every, "train.resume_from": resume_from}


def copy_checkpoint(source: str, destination: str) -> None:
    """A raylm checkpoint directory copied file by file into ``destination`` (which may exist)."""
    shutil.copytree(Path(source), Path(destination), dirs_exist_ok=True)


def _clipper(cfg: RaylmConfig):
    """PBT's explore scales a value by 0.8 or 1.2, which can leave the space's range (a probability
    of 1.1); clipped back into ``tune.space`` so every mutated config is one the space allows."""
    bounds = {path: dim.values for path, dim in cfg.tune.space.items() if dim.kind in ("uniform", "loguniform", "randint")}
    integer = {path for path, dim in cfg.tune.space.items() if dim.kind == "randint"}

    def explore(config: dict[str, Any]) -> dict[str, Any]:
        for path, (low, high) in bounds.items():
            if path in config:
                value = min(max(config[path], low), high)
                config[path] = int(min(round(value), high - 1)) if path in integer else float(value)
        return config

    return explore


def _steps_additively(path: str, dim) -> bool:
    """``tune.explore: pba`` moves this key in tenths of its range (an augmentation with a range)."""
    return path.startswith("augment.") and dim.kind in ("uniform", "randint")


def starting_values(cfg: RaylmConfig) -> dict[str, Any]:
    """``tune.explore: pba``: the values every trial starts from instead of a draw: each augment.* key with
    a range at its low end. PBA starts every probability and magnitude at zero and lets the population
    raise them, so the learned schedule is a curriculum from unaugmented data up."""
    if cfg.tune.scheduler != "pbt" or cfg.tune.explore != "pba":
        return {}
    return {path: (float if dim.kind == "uniform" else int)(dim.values[0])
            for path, dim in cfg.tune.space.items() if _steps_additively(path, dim)}


def _draw(dim) -> Any:
    """A fresh value from a ``tune.space`` dimension, from Python's random module (seeded by tune.seed)."""
    if dim.kind == "uniform":
        return random.uniform(*dim.values)
    if dim.kind == "loguniform":
        low, high = dim.values
        return math.exp(random.uniform(math.log(low), math.log(high)))
    if dim.kind == "randint":
        return random.randrange(*dim.values)
    return random.choice(list(dim.values))


def _pba_explorer(cfg: RaylmConfig):
    """PBA's explore step (arcelien/pba, its CIFAR-10 search): with ``tune.resample_probability`` a value
    is drawn anew; otherwise an augment.* value moves 0, 1, 2 or 3 tenths of its range, up or down with
    equal chance (a value at zero can grow, which PBT's x0.8 / x1.2 never lets it), and other keys
    (lr, weight decay) scale by 0.8 or 1.2 as in PBT. Ray's own explore runs first with its factors at
    1.0 and no resampling, so it only moves ``choice`` keys to a neighbouring choice."""
    tc = cfg.tune
    space = {path: dim for path, dim in tc.space.items() if dim.kind != "grid"}
    clip = _clipper(cfg)

    def explore(config: dict[str, Any]) -> dict[str, Any]:
        for path, dim in space.items():
            if path not in config:
                continue
            if random.random() < tc.resample_probability:
                config[path] = _draw(dim)
            elif _steps_additively(path, dim):
                low, high = dim.values
                config[path] = config[path] + random.choice((-1, 1)) * random.randint(0, 3) * (high - low) / 10
            elif dim.kind != "choice":
                config[path] = config[path] * random.choice((0.8, 1.2))
        return clip(config)

    return explore


def _taking_turns(scheduler_class):
    """``scheduler_class`` (PBT or PB2) running at most ``limit`` trials at a time, the population in turns.

    raylm caps a sweep's running trials by how many trials its search generator keeps live (one CPU
    stays free for Ray Data), so a population larger than the cluster's slots would never exist at
    once: PBT pauses a trial at a perturbation only when others wait, and compares only unfinished
    trials, so trial 2 would start after trial 1 ended and nobody would ever exploit anyone. Here a
    trial paused at a perturbation leaves the generator's live set (the next trial is created, or a
    paused one resumed), a trial is paused at each perturbation while the population is not all
    created yet, and a paused trial resumes only into a free slot."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    class TakingTurns(scheduler_class):
        def __init__(self, *args, limit: int, generator, epochs: int, population: int, **kwargs):
            super().__init__(*args, **kwargs)
            self._limit, self._generator, self._epochs, self._population = limit, generator, epochs, population
            self._now = None  # the epoch of the perturbation being decided (see _quantiles)
            self._pausing: set[str] = set()  # trials told to pause whose save is still in flight
            self._created_all = generator.is_finished  # the generator's own answer (see _exploit)
            self._to_restart: set[str] = set()  # exploited trials waiting for their actor to restart them
            if self._all_live():
                # Only with the whole population live: Tune saves the search generator with a sweep, and a
                # taking-turns sweep resumed with this wrapper saved on it waited forever on the old one
                # (tests/integration/tune/test_population_runs.py's interrupted sweep hung).
                generator.is_finished = lambda: self._created_all() and not self._to_restart

        def on_trial_result(self, tune_controller, trial, result):
            # A result means the trial runs again, however Tune restarted it (choose_trial_to_run, or
            # Tune's own start of a paused trial on a cached actor): the sweep may end without it.
            self._to_restart.discard(trial.trial_id)
            if result.get("epoch", 0) >= self._epochs:
                # The last epoch: nothing is left to train after a copy or a pause, so no perturbation;
                # the trial goes on to its compressed measurement.
                return TrialScheduler.CONTINUE
            state = self._trial_state.get(trial)
            before = state.last_perturbation_time if state is not None else None
            exploits = self._num_perturbations
            self._now = result.get(self._time_attr)
            try:
                decision = super().on_trial_result(tune_controller, trial, result)
            finally:
                self._now = None
            perturbed = state is not None and state.last_perturbation_time != before  # this result was a perturbation
            if perturbed and state.last_checkpoint is None and self._num_perturbations == exploits:
                # PBT keeps a checkpoint only of a trial in the upper quantile *at its own perturbation*.
                # Taking turns, the first trials reach a perturbation alone (no quantiles yet), so the
                # best of them would never be a donor: the trials arriving later found "no checkpoint"
                # and skipped every exploit. Each perturbed trial that was not exploited keeps its
                # checkpoint, so that it can be copied once the others have caught up.
                state.last_checkpoint = tune_controller._schedule_trial_save(trial, result=state.last_result)
            if decision == TrialScheduler.CONTINUE and perturbed and not self._all_created(tune_controller):
                decision = TrialScheduler.PAUSE  # not all of the population exists yet: let the next one start
            if decision == TrialScheduler.PAUSE or trial.status == Trial.PAUSED:
                self._generator._live_trials.discard(trial.trial_id)
            if decision == TrialScheduler.PAUSE:
                self._pausing.add(trial.trial_id)
            return decision

        def _all_created(self, tune_controller) -> bool:
            """Whether the whole population exists. Not the generator's ``is_finished()`` alone: it turns
            true only when asked for a trial beyond the last while under its cap, so with the whole
            population live (cap = population) it stayed false, and every trial was paused (saved, its
            actor stopped, restarted) at every perturbation as if others waited for its slot."""
            return self._created_all() or (self._all_live() and len(tune_controller.get_trials()) >= self._population)

        def _all_live(self) -> bool:
            """The slots hold the whole population (no turns): the two changes above apply only then;
            taking turns keeps the behaviour its tests cover."""
            return self._limit >= self._population

        def _exploit(self, tune_controller, trial, trial_to_clone):
            """Ray's exploit pauses the trial (its actor stops) and restarts it from the donor's
            checkpoint. Tune keeps a stopping actor for reuse only while the search may still create
            trials or one is staged; with the whole population live, neither holds, so every exploit
            started a new process (torch and raylm imported again, ~10 s under load). The generator
            answers "not finished" until the exploited trial is restarted, so the actor is cached and
            the trial continues in it: reset_config (its mutated config), then load_checkpoint (the
            donor's weights and optimizer state)."""
            if self._all_live():
                self._to_restart.add(trial.trial_id)
            super()._exploit(tune_controller, trial, trial_to_clone)

        def _quantiles(self):
            """The lower and upper quantiles among the trials perturbed at the epoch the reporting
            trial is perturbed at (Ray's PBT ranks every trial's latest score: taking turns, the
            others' latest scores are of earlier epochs, so the reporting trial, trained longest,
            was never in the lower quantile and nobody was ever exploited)."""
            if self._now is None:
                return super()._quantiles()
            peers = sorted((t for t, s in self._trial_state.items()
                            if s.last_perturbation_time == self._now and s.last_score is not None
                            and not math.isnan(s.last_score) and not t.is_finished()),
                           key=lambda t: self._trial_state[t].last_score)
            if len(peers) <= 1:
                return [], []
            count = min(math.ceil(len(peers) * self._quantile_fraction), len(peers) // 2)
            return peers[:count], peers[-count:]

        def _turn(self, trial) -> tuple[float, float]:
            """The waiting trial with the fewest epochs runs first (Tune's own choice sorts by a time it
            updates in synch mode only, so in async mode the first paused trial would run on and on);
            among equals, the best score at the last perturbation first. A trial is ranked among the
            trials already perturbed at its epoch (``_quantiles``), so the first to arrive is ranked
            alone and never exploited: in creation order the weakest trial could arrive first at every
            perturbation (seen: the test's lr=1e-7 trial trained all its epochs and was never copied
            over). Best first, the weakest arrives last, ranked against the whole population."""
            state = self._trial_state.get(trial)
            score = state.last_score if state is not None and state.last_score is not None else math.inf
            return (trial.last_result or {}).get("training_iteration", 0), -score

        def choose_trial_to_run(self, tune_controller):
            # A trial being paused (its save in flight) frees its slot now: the next trial is staged
            # before the paused trial's actor stops, and Tune caches an actor for reuse only while a
            # trial is staged (after the whole population was created it would stop it). The next
            # trial then resumes in that actor (reset_config + load_checkpoint) instead of a new
            # process importing torch: taking turns, every trial restarts at every perturbation.
            trials = tune_controller.get_trials()
            self._pausing -= {t.trial_id for t in trials if t.status not in (Trial.RUNNING, Trial.PENDING)}
            busy = sum(t.status in (Trial.RUNNING, Trial.PENDING) and t.trial_id not in self._pausing for t in trials)
            if busy >= self._limit:
                return None
            waiting = [t for t in trials if t.status in (Trial.PENDING, Trial.PAUSED) and t.trial_id not in self._pausing]
            trial = min(waiting, key=self._turn, default=None)
            if trial is not None:
                self._generator._live_trials.add(trial.trial_id)
                self._to_restart.discard(trial.trial_id)
            return trial

    return TakingTurns


def population_scheduler(cfg: RaylmConfig, *, limit: int, generator):
    """Ray Tune's PopulationBasedTraining (or PB2) for ``cfg.tune``: epochs as time, val_accuracy as
    score; ``limit`` trials at a time, ``generator`` the sweep's BasicVariantGenerator (capped at ``limit``)."""
    from ray import tune

    tc = cfg.tune
    mutable = {path: dim for path, dim in tc.space.items() if dim.kind != "grid"}
    common = dict(time_attr="training_iteration", metric="val_accuracy", mode="max",
                  perturbation_interval=tc.perturbation_interval, quantile_fraction=tc.quantile_fraction,
                  require_attrs=False)  # the trial's last report (its compressed measurement) ends it: done=True
    if tc.seed is not None:
        random.seed(tc.seed)  # PBT's explore draws from Python's random module
    if tc.scheduler == "pb2":
        from ray.tune.schedulers.pb2 import PB2

        return _taking_turns(PB2)(hyperparam_bounds={path: list(dim.values) for path, dim in mutable.items()},
                                  custom_explore_fn=_clipper(cfg), limit=limit, generator=generator,
                                  epochs=cfg.train.epochs, population=cfg.tune.num_samples, **common)
    from ray.tune.schedulers import PopulationBasedTraining

    makers = {"uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v),
              "randint": lambda v: tune.randint(*v), "choice": lambda v: list(v)}
    explore = dict(resample_probability=tc.resample_probability, custom_explore_fn=_clipper(cfg))
    if tc.explore == "pba":
        explore = dict(resample_probability=0.0, perturbation_factors=(1.0, 1.0), custom_explore_fn=_pba_explorer(cfg))
    return _taking_turns(PopulationBasedTraining)(
        hyperparam_mutations={p: makers[d.kind](d.values) for p, d in mutable.items()}, limit=limit,
        generator=generator, epochs=cfg.train.epochs, population=cfg.tune.num_samples, **explore, **common)
