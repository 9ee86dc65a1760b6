"""PBT taking turns (raylm/tune/population.py), on Ray's own PBT and Trial objects, no cluster: a
perturbing trial is ranked among the trials perturbed at the same epoch, never against the stale
scores of trials still at an earlier epoch."""

from __future__ import annotations

import pytest

from raylm.config import load_config


def _scheduler(tmp_path, quantile_fraction: float = 0.25):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from raylm.tune.population import population_scheduler

    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", "train.num_workers=1", "train.epochs=6",
                             f"train.storage_path={tmp_path}", "tune.scheduler=pbt", "tune.perturbation_interval=2",
                             f"tune.quantile_fraction={quantile_fraction}",
                             "tune.space={augment.image.rotate_p: {uniform: [0.0, 0.8]}}"])
    return population_scheduler(cfg, limit=2, generator=BasicVariantGenerator(max_concurrent=2))


def _population(scheduler, scores_at: dict[str, tuple[int, float]]):
    from ray.tune.experiment import Trial
    from ray.tune.schedulers.pbt import _PBTTrialState

    trials = {}
    for name, (epoch, score) in scores_at.items():
        trial = Trial("raylm_trial", trial_id=name, stub=True)
        state = _PBTTrialState(trial)
        state.last_score, state.last_perturbation_time, state.last_train_time = score, epoch, epoch
        scheduler._trial_state[trial] = state
        trials[name] = trial
    return trials


def test_a_perturbing_trial_is_ranked_among_the_trials_perturbed_at_its_epoch(tmp_path):
    scheduler = _scheduler(tmp_path)
    # "d" reports epoch 4 (0.80), below the other epoch-4 trials; "e".."h" are still at epoch 2,
    # with lower scores that Ray's ranking would put in the lower quantile instead of "d".
    _population(scheduler, {"a": (4, 0.90), "b": (4, 0.88), "c": (4, 0.86), "d": (4, 0.80),
                                     "e": (2, 0.60), "f": (2, 0.55), "g": (2, 0.50), "h": (2, 0.45)})
    scheduler._now = 4
    lower, upper = scheduler._quantiles()
    assert [t.trial_id for t in lower] == ["d"] and [t.trial_id for t in upper] == ["a"]
    scheduler._now = None  # outside a perturbation: Ray's ranking of every latest score
    lower, upper = scheduler._quantiles()
    assert {t.trial_id for t in lower} == {"h", "g"} and {t.trial_id for t in upper} == {"a", "b"}


@pytest.mark.parametrize("peers, expected", [(1, 0), (2, 1), (4, 1), (5, 2), (8, 2)])
def test_the_quantile_size_follows_ray_rule_on_the_peers_alone(tmp_path, peers, expected):
    scheduler = _scheduler(tmp_path)
    _population(scheduler, {f"t{i}": (2, 0.1 * i) for i in range(peers)} | {"late": (4, 0.99)})
    scheduler._now = 2
    lower, upper = scheduler._quantiles()
    assert len(lower) == len(upper) == expected
    assert all(t.trial_id != "late" for t in lower + upper)
    if expected:
        assert lower[0].trial_id == "t0" and upper[-1].trial_id == f"t{peers - 1}"


def test_waiting_trials_take_turns_fewest_epochs_first_then_best_score_first(tmp_path):
    """The weakest trial of a round arrives last at the next perturbation, when its peers are there to
    rank it against (the first to arrive is ranked alone and could never be exploited)."""
    from ray.tune.experiment import Trial

    scheduler = _scheduler(tmp_path)
    trials = _population(scheduler, {"weak": (2, 0.30), "best": (2, 0.95), "mid": (2, 0.60), "behind": (0, 0.10)})
    for name, trial in trials.items():
        trial.status = Trial.PAUSED
        trial.run_metadata.last_result = {"training_iteration": 0 if name == "behind" else 2, "x": 1}

    class Controller:
        def get_trials(self):
            return list(trials.values())

    order = []
    for _ in trials:
        chosen = scheduler.choose_trial_to_run(Controller())
        order.append(chosen.trial_id)
        chosen.status = Trial.TERMINATED  # out of the waiting set, not counted as busy
    assert order == ["behind", "best", "mid", "weak"]
