"""``tune.max_trial_epochs`` (raylm/tune/budget.py): a fixed-policy search spends a PBT population's
trial-epochs. Tune's own generator and stopper driven as Tune's controller drives them, no cluster:
never an epoch past the budget, more trials sampled while it has room; refusals name the key."""

from __future__ import annotations

import pytest

from raylm.config import ConfigError, load_config

BASE = ["task.modality=image", "model.name=seed_cnn", "train.num_workers=1", "train.epochs=4",
        "tune.space={train.lr: {uniform: [0.001, 0.01]}}"]


def _generator(budget: int, epochs: int, samples: int, concurrent: int):
    from ray.tune import Trainable, uniform

    from raylm.tune.budget import BudgetedGenerator, EpochBudget

    stopper = EpochBudget(budget, epochs)
    generator = BudgetedGenerator(random_state=0, max_concurrent=concurrent, budget=stopper)
    generator.add_configurations({"budget": {"run": type("Trial", (Trainable,), {}), "num_samples": samples,
                                             "config": {"train.lr": uniform(0.001, 0.01)}}})
    return generator, stopper


def _drive(budget: int, epochs: int, samples: int, concurrent: int, asha_stops: dict[int, int] | None = None):
    """Tune's loop, one epoch per running trial per round: create trials while the generator gives
    them, report an epoch for each running trial, stop it where the stopper (or "ASHA", at the epoch
    ``asha_stops`` gives for the n-th trial) says so. Returns {trial index: epochs trained}."""
    generator, stopper = _generator(budget, epochs, samples, concurrent)
    running: dict[str, int] = {}
    index: dict[str, int] = {}
    trained: dict[int, int] = {}
    for _ in range(1000):
        while (trial := generator.next_trial()) is not None:
            index[trial.trial_id] = len(index)
            running[trial.trial_id] = 0
        if not running:
            break
        for trial_id in list(running):
            running[trial_id] += 1
            epoch = running[trial_id]
            trained[index[trial_id]] = epoch
            stop = stopper(trial_id, {"epoch": epoch, "val_accuracy": 0.5})
            if not stop and epoch == epochs:
                assert not stopper(trial_id, {"compressed": True, "epochs": epochs})  # the measurement
                stop = True
            if not stop and (asha_stops or {}).get(index[trial_id]) == epoch:
                stop = True  # the scheduler's STOP comes after the stopper said continue
            if stop:
                del running[trial_id]
                generator.on_trial_complete(trial_id)
    assert generator.is_finished() or len(index) == samples
    return trained


@pytest.mark.parametrize("budget, epochs, concurrent", [(7, 3, 2), (20, 4, 8), (9, 3, 3), (1, 3, 2)])
def test_the_trials_train_exactly_the_budget_and_more_are_sampled_to_spend_it(budget, epochs, concurrent):
    trained = _drive(budget, epochs, samples=100, concurrent=concurrent)
    assert sum(trained.values()) == budget
    assert len(trained) >= -(-budget // epochs)  # as many trials as the budget needs at the least
    assert all(1 <= e <= epochs for e in trained.values())


def test_trials_asha_stops_early_free_their_reserved_epoch_for_new_trials():
    # Every other trial is stopped by "ASHA" after 1 epoch with its 2nd epoch already reserved.
    trained = _drive(12, 3, samples=100, concurrent=4, asha_stops={i: 1 for i in range(0, 100, 2)})
    assert sum(trained.values()) == 12
    assert len(trained) > 12 // 3  # the stops bought more trials than 12 epochs of full trials


def test_the_trial_cap_still_holds_under_a_budget():
    trained = _drive(100, 3, samples=4, concurrent=2)
    assert len(trained) == 4 and sum(trained.values()) == 12


@pytest.mark.parametrize("overrides, message", [
    (["tune.scheduler=pbt", "tune.max_trial_epochs=8"],
     "tune.max_trial_epochs: tune.scheduler=pbt trains every trial of its population to the end"),
    (["tune.search=optuna", "tune.max_trial_epochs=8"], "tune.max_trial_epochs: needs tune.search=random"),
    (["tune.num_samples=2", "tune.max_trial_epochs=9"],
     "tune.max_trial_epochs: 9 is more than tune.num_samples x train.epochs = 2 x 4 = 8 could ever train"),
    (["tune.max_trial_epochs=0"], "tune.max_trial_epochs"),
])
def test_a_budget_is_refused_where_it_cannot_hold_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, BASE + overrides)
    assert message in str(err.value)


def test_a_budget_is_accepted_on_a_random_fixed_policy_search():
    cfg = load_config(None, BASE + ["tune.scheduler=asha", "tune.num_samples=20", "tune.max_trial_epochs=80"])
    assert cfg.tune.max_trial_epochs == 80


@pytest.mark.parametrize("overrides, measured", [
    (["tune.scheduler=pbt", "tune.export=none"], False),  # accuracy alone, nothing exported: not compressed
    (["tune.scheduler=pbt", "tune.export=best"], True),  # the best trial's artifact is exported
    (["tune.scheduler=pbt", "tune.export=none", "tune.objectives=[accuracy, size_mb]"], True),
    (["tune.scheduler=pbt", "tune.export=none", "compress.quantize.mode=dynamic"], True),  # compressed != dense
    (["tune.scheduler=asha", "tune.export=none"], False),  # whatever the scheduler: ASHA's search alike
    (["tune.scheduler=asha", "tune.export=best"], True),
])
def test_a_trial_is_compressed_and_measured_only_where_its_sweep_reads_it(overrides, measured):
    from raylm.tune.trial import measures_trials

    cfg = load_config(None, BASE + overrides)
    assert measures_trials(cfg, {"train.lr": 0.002}) is measured
    pbt = load_config(None, BASE + ["tune.scheduler=pbt", "tune.export=none"])
    assert measures_trials(pbt, {"compress.quantize.mode": "dynamic"})  # a searched recipe is measured


def test_a_budgeted_sweeps_console_counts_trial_epochs_of_the_budget(monkeypatch):
    """The sweep's line counts what the budget counts: trial-epochs of ``tune.max_trial_epochs`` (a
    budgeted search ends when they are spent, whatever ``num_samples`` says), not trials of num_samples."""
    import io
    from types import SimpleNamespace

    import raylm.console as console
    from raylm.tune.progress import SweepProgress

    out = io.StringIO()
    monkeypatch.setattr(console, "_active", console.Console(out, io.StringIO(), live=False))
    budgeted, plain = SweepProgress(num_samples=10, epoch_budget=7), SweepProgress(num_samples=10)
    for progress in (budgeted, plain):
        for index, epochs in enumerate((3, 3, 1)):  # 7 trial-epochs over three trials, the last stopped
            trial = SimpleNamespace(trial_id=f"t{index}", last_result={})
            progress.on_trial_start(0, [], trial)
            for epoch in range(1, epochs + 1):
                progress.on_trial_result(0, [], trial, {"epoch": epoch, "val_accuracy": 0.5})
            if epochs == 3:  # its measurement: a report, not an epoch
                trial.last_result = {"compressed": True, "accuracy": 0.9, "epochs": 3}
                progress.on_trial_result(0, [], trial, trial.last_result)
            progress.on_trial_complete(0, [], trial)
    assert (budgeted.bar.completed, budgeted.bar.total, budgeted.bar.unit) == (7, 7, "trial-epochs")
    assert (plain.bar.completed, plain.bar.total, plain.bar.unit) == (3, 10, "trials")
    assert "completed 2  stopped 1" in budgeted._info()


def test_a_resumed_budgeted_sweep_goes_on_from_the_count_at_its_checkpoint(tmp_path):
    """Tune pickles the stopper once at the start (tuner.pkl) and the generator, which holds the same budget,
    at each experiment checkpoint. A resumed sweep (a new driver process) unpickles both: they must be one
    budget with the checkpoint's count, or the resumed sweep trains the whole budget again."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import cloudpickle

    generator, stopper = _generator(budget=7, epochs=3, samples=10, concurrent=2)
    (tmp_path / "tuner.pkl").write_bytes(cloudpickle.dumps({"stop": stopper}))  # the run config, at the start
    first, second = generator.next_trial(), generator.next_trial()
    for trial, epochs in ((first, 3), (second, 1)):
        for epoch in range(1, epochs + 1):
            stopper(trial.trial_id, {"epoch": epoch})
    assert stopper.trained == 4
    (tmp_path / "searcher.pkl").write_bytes(cloudpickle.dumps(generator.get_state()))  # an experiment checkpoint
    code = ("import json, pickle, sys\n"
            "from pathlib import Path\n"
            "d = Path(sys.argv[1])\n"
            "stop = pickle.loads((d / 'tuner.pkl').read_bytes())['stop']\n"
            "budget = pickle.loads((d / 'searcher.pkl').read_bytes())['budget']\n"
            "print(json.dumps({'same': stop is budget, 'trained': stop.trained, 'room': stop.room()}))\n")
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True,
                         env=os.environ | {"PYTHONPATH": str(root)}, timeout=120, check=True).stdout
    # 4 trained, the second trial's next epoch reserved: 2 left of 7
    assert json.loads(out.strip().splitlines()[-1]) == {"same": True, "trained": 4, "room": 2}


def test_the_sweep_line_tells_interrupted_trials_from_stopped_ones_and_counts_restored_ones(monkeypatch):
    """A Ctrl-C's trials, which Tune marks terminated, were counted as "stopped" (ASHA's word); a resumed sweep's
    line began "completed 1 stopped 0" though the sweep had stopped two trials before."""
    import io
    from types import SimpleNamespace

    import raylm.console as console
    from raylm.tune.progress import SweepProgress

    out = io.StringIO()
    monkeypatch.setattr(console, "_active", console.Console(out, io.StringIO(), live=False))

    def trial(name, status, compressed=False):
        return SimpleNamespace(trial_id=name, status=status,
                               last_result={"compressed": True, "accuracy": 0.8} if compressed else {"epoch": 1})

    progress = SweepProgress(num_samples=6)
    done, asha, cut = trial("a", "TERMINATED", True), trial("b", "TERMINATED"), trial("c", "RUNNING")
    for t in (done, asha, cut):
        progress.on_trial_start(0, [], t)
    progress.on_trial_complete(0, [], done)
    progress.on_trial_complete(0, [], asha)
    cut.status = "TERMINATED"  # what Tune leaves after the Ctrl-C
    progress.on_experiment_end([done, asha, cut, trial("d", "PENDING")])
    assert "completed 1  stopped 1  interrupted 1" in progress._info()

    resumed = SweepProgress(num_samples=6)  # a new driver: the ended trials fire no event
    resumed.on_step_begin(0, [done, asha, trial("c", "PENDING")])
    assert "completed 1  stopped 1  " in resumed._info() and "best acc 0.800 (a)" in resumed._info()
