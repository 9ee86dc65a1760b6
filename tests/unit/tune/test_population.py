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


def _pba_scheduler(tmp_path):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from raylm.tune.population import population_scheduler

    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", "train.num_workers=1", "train.epochs=6",
                             f"train.storage_path={tmp_path}", "tune.scheduler=pbt", "tune.explore=pba",
                             "tune.perturbation_interval=2", "tune.resample_probability=0.2", "tune.seed=3",
                             "tune.space={augment.image.rotate_p: {uniform: [0, 0.8]}, "
                             "augment.image.max_rotation: {uniform: [0.0, 180.0]}, train.lr: {loguniform: [0.001, 0.005]}, "
                             "train.batch_size: {choice: [16, 32, 64]}}"])
    return cfg, population_scheduler(cfg, limit=2, generator=BasicVariantGenerator(max_concurrent=2))


def test_pba_explore_starts_augmentations_at_zero_and_steps_them_in_tenths_of_their_range(tmp_path):
    """tune.explore=pba (PBA's explore, arcelien/pba): trials start unaugmented; an explore moves an
    augmentation 0-3 tenths of its range, so a value at zero can grow (PBT's x0.8 / x1.2 keeps it at
    zero); lr still scales by 0.8 / 1.2; a choice moves to a neighbour; resamples stay in range."""
    from ray.tune.experiment import Trial
    from ray.tune.search.sample import Domain

    from raylm.tune.space import tune_param_space

    cfg, scheduler = _pba_scheduler(tmp_path)
    space = tune_param_space(cfg)
    assert space["augment.image.rotate_p"] == 0.0 and space["augment.image.max_rotation"] == 0.0
    assert isinstance(space["train.lr"], Domain) and isinstance(space["train.batch_size"], Domain)  # still drawn

    donor = Trial("raylm_trial", trial_id="donor", stub=True)
    start = {"augment.image.rotate_p": 0.0, "augment.image.max_rotation": 0.0, "train.lr": 0.002, "train.batch_size": 32}
    moves = {"augment.image.rotate_p": set(), "augment.image.max_rotation": set(), "train.lr": set(), "train.batch_size": set()}
    for _ in range(400):
        donor.config = dict(start)
        new, _ = scheduler._get_new_config(Trial("raylm_trial", trial_id="t", stub=True), donor)
        assert 0.0 <= new["augment.image.rotate_p"] <= 0.8 and 0.0 <= new["augment.image.max_rotation"] <= 180.0
        assert 0.001 <= new["train.lr"] <= 0.005 and new["train.batch_size"] in (16, 32, 64)
        for key in moves:
            moves[key].add(round(new[key], 6))
    # From zero: 0 (a step down, clipped, or 0 steps) or 1, 2, 3 tenths up, plus a few resamples anywhere.
    steps = {round(v / 18.0, 6) for v in moves["augment.image.max_rotation"]}
    assert {0.0, 1.0, 2.0, 3.0} <= steps
    off_grid = [v for v in steps if v != int(v)]
    assert 0 < len(off_grid) < 160, "resample_probability 0.2 of 400 explores draws some values anew, not most"
    assert {0.0024, 0.0016} <= moves["train.lr"]  # x1.2, x0.8
    assert {16, 64} <= moves["train.batch_size"]  # a neighbour of 32


def test_pba_explore_is_refused_without_pbt_or_an_augmentation_range():
    from raylm.config import ConfigError

    base = ["task.modality=image", "model.name=seed_cnn", "train.num_workers=1", "train.epochs=4", "tune.explore=pba"]
    with pytest.raises(ConfigError, match=r"tune.explore: pba is how PBT mutates a trial's values; it needs "
                                          r"tune.scheduler=pbt \(not asha\)"):
        load_config(None, [*base, "tune.scheduler=asha", "tune.space={augment.image.rotate_p: {uniform: [0, 1]}}"])
    with pytest.raises(ConfigError, match=r"tune.explore: pba starts and steps augment.\* values, and tune.space has "
                                          r"no augment.\* key with a range"):
        load_config(None, [*base, "tune.scheduler=pbt", "tune.space={train.lr: {loguniform: [0.001, 0.01]}}"])
