"""One-worker training over kept splits reads them into memory and augments in its own process
(raylm/train/memory_feed.py); streamed splits and several workers keep Ray Data."""

import pytest

from raylm.train import build_trainer, fit
from tests.helpers.oracles import assert_beats_chance

pytestmark = pytest.mark.integration


def test_one_worker_over_kept_splits_trains_from_memory_with_augmentation_and_learns(ray_local, tiny_config):
    cfg = tiny_config("image", "train.num_workers=1", "data.materialize=true", "augment.image.rotate_p=0.5",
                      "augment.image.max_rotation=10", "augment.image.hflip_p=0.5")
    outcome = fit(cfg)
    assert [h["feed"] for h in outcome.history] == ["memory"] * len(outcome.history)
    # Every validation sample is scored (memory has no equal split to drop a row from) and it learned.
    assert outcome.metrics["val_samples"] == 61
    assert_beats_chance(outcome.metrics["val_accuracy"], outcome.metrics["val_samples"], "image")


def test_streamed_splits_and_two_workers_keep_ray_data(ray_local, tiny_config):
    for overrides in (["train.num_workers=1", "data.materialize=false"], ["train.num_workers=2", "data.materialize=true"]):
        trainer, _ = build_trainer(tiny_config("image", *overrides), in_process=overrides[0].endswith("=1"))
        loop_config = getattr(trainer, "loop_config", None) or trainer.train_loop_config
        assert "memory" not in loop_config, overrides


def test_in_the_driver_only_over_kept_splits_a_streamed_set_keeps_its_worker(ray_local, tiny_config):
    """``fits_in_driver`` (one CPU worker on a Ray this process started) trains in this process only
    over the memory feed's kept splits: a streamed set would run Ray Data's executor beside the loop."""
    from ray.train.torch import TorchTrainer

    from raylm.train.in_process import InProcessTrainer

    kept, _ = build_trainer(tiny_config("image", "train.num_workers=1", "data.materialize=true"), in_driver=True)
    streamed, _ = build_trainer(tiny_config("image", "train.num_workers=1", "data.materialize=false"), in_driver=True)
    assert isinstance(kept, InProcessTrainer) and "memory" in kept.loop_config
    assert isinstance(streamed, TorchTrainer) and "memory" not in streamed.train_loop_config
