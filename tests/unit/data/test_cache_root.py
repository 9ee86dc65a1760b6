"""Where a URI run's shared ``_cache/`` (the generated demo sets) lives, for a run and for a sweep's trials."""

from raylm.config import load_config
from raylm.data.sources import cache_root
from raylm.tune.space import trial_config
from raylm.tune.sweep import trials_location


def test_a_sweeps_trials_share_the_sweeps_cache_not_one_among_their_directories(tmp_path):
    cfg = load_config("jobs/configs/image_tune.yaml", ["train.storage_path=s3://bucket/runs", "train.name=sweep"])
    assert cache_root(cfg).uri == "s3://bucket/runs"
    trials = trials_location(cfg, tmp_path / "tune")
    assert trials == "s3://bucket/runs/sweep/tune/trials"
    trial = trial_config(cfg.to_dict(), {"train.lr": 0.002}, storage_path=trials, name="t_00001")
    assert cache_root(trial).uri == "s3://bucket/runs"  # was s3://bucket/runs/sweep/tune/trials: a second copy
    local = load_config("jobs/configs/image.yaml", [f"train.storage_path={tmp_path}"])
    assert cache_root(local).local_path == tmp_path
