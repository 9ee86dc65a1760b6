"""``tune.max_trial_epochs`` on a real sweep (raylm/tune/budget.py): the fixed-policy search a PBT
population is compared with samples trials until they trained the budget, never an epoch more."""

from __future__ import annotations

import json

import pytest

from tests.helpers.tuning import _SWEEP


@pytest.mark.integration
def test_a_budgeted_sweep_samples_trials_until_they_trained_the_budget(ray_local, tiny_config):
    from raylm.tune import sweep

    # 3 epochs per trial, a budget of 7 trial-epochs, 2 trials at a time: two full trials and a third
    # stopped after its first epoch; the cap of 5 trials is never reached.
    cfg = tiny_config("image", *(o for o in _SWEEP if not o.startswith("tune.max_concurrent")), "tune.max_concurrent_trials=2",
                      "tune.space={train.lr: {loguniform: [0.001, 0.01]}}", "tune.num_samples=5",
                      "tune.max_trial_epochs=7", "tune.measure_on=trial", "tune.export=none")
    result = sweep(cfg, verbose=False)

    # Every epoch any trial reported, from Tune's own per-trial logs (not raylm's rows).
    reported = [json.loads(line) for log in result.tune_dir.glob("*/result.json") for line in log.read_text().splitlines()]
    epochs = [r for r in reported if "epoch" in r and not r.get("compressed")]
    assert len(epochs) == 7, f"{len(epochs)} trial-epochs trained against a budget of 7: {result.rows}"
    assert sum(r["epochs"] for r in result.rows) == 7
    assert len(result.rows) == 3, result.rows  # more trials than the 2 that run at once
    assert sorted(r["status"] for r in result.rows) == ["completed", "completed", "stopped"], result.rows
    assert result.best is not None and result.best["status"] == "completed"
