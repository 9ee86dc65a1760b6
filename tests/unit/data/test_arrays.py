"""Decoded splits fed from memory (raylm/data/arrays.py): a population trial's in-process loop reads
ArrayShards instead of Ray Data shards. They must give the loop what the Ray Data path gives it:
every training row once per epoch, in a seeded order, augmented with the draws of that epoch (the
Ray Data stage's function of seed, epoch and content), the schedule's values of that epoch; the
validation split clean and in order."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raylm.config import load_config


def _columns(rows: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"image": rng.random((rows, 8, 8, 3), dtype=np.float32), "label": np.arange(rows, dtype=np.int64) % 3}


def _cfg(*overrides: str):
    return load_config(None, ["task.modality=image", "model.name=seed_cnn", "data.image.size=8", "train.seed=3",
                              *overrides])


def _epoch(shard, clock, epoch: int, seed: int | None, batch_size: int = 16) -> dict[str, np.ndarray]:
    from raylm.data.augment import set_epoch

    set_epoch(clock, epoch)  # what the loop does before asking for the epoch's batches
    batches = list(shard.iter_torch_batches(batch_size=batch_size, local_shuffle_seed=seed))
    return {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}


def _augmented(cfg, columns, epoch: int, policy=None) -> np.ndarray:
    from raylm.data.augment import augment_batch

    return augment_batch(columns, modality="image", policy=policy or cfg.augment.image, seed=cfg.train.seed,
                         epoch=epoch)["image"]


def test_train_rows_come_once_per_epoch_augmented_with_that_epochs_draws_and_validation_clean():
    from raylm.data.arrays import SplitArrays, array_shards

    cfg = _cfg("augment.image.rotate_p=1.0", "augment.image.max_rotation=30", "augment.image.cutout_p=0.5")
    columns, val = _columns(), _columns(10)
    shards, clock = array_shards(cfg, SplitArrays(columns, val))
    assert clock is not None
    seen = {}
    for epoch in (0, 1):
        got = _epoch(shards["train"], clock, epoch, seed=1000 + epoch)
        order = np.random.default_rng(1000 + epoch).permutation(len(columns["label"]))
        assert sorted(order.tolist()) == list(range(40))
        np.testing.assert_array_equal(got["label"], columns["label"][order])
        # The Ray Data stage's augmentation of the same rows at the same epoch, whatever the batching.
        np.testing.assert_allclose(got["image"], _augmented(cfg, columns, epoch)[order], atol=1e-6)
        assert not np.allclose(got["image"], columns["image"][order])
        seen[epoch] = got["image"][np.argsort(order)]
    assert not np.allclose(seen[0], seen[1]), "the same augmentation drawn in two epochs"
    clean = _epoch(shards["validation"], None, 0, seed=None, batch_size=3)
    np.testing.assert_array_equal(clean["image"], val["image"])
    np.testing.assert_array_equal(clean["label"], val["label"])


def test_a_replayed_schedule_sets_each_epochs_policy(tmp_path):
    from raylm.data.arrays import SplitArrays, array_shards
    from raylm.data.schedule import SCHEDULE_VERSION

    values = [{"augment.image.cutout_p": 0.0, "augment.image.cutout_size": 0.5},
              {"augment.image.cutout_p": 1.0, "augment.image.cutout_size": 0.5}]
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"version": SCHEDULE_VERSION, "per_epoch": [
        {"epoch": i + 1, "trial": "t", "values": v} for i, v in enumerate(values)]}))
    cfg = _cfg("train.epochs=4", f"augment.schedule={path}")  # the fixed policy is the identity
    columns = _columns()
    shards, clock = array_shards(cfg, SplitArrays(columns, _columns(4)))
    for epoch, cutout in enumerate([0.0, 0.0, 1.0, 1.0]):  # 2 learned epochs stretched over 4
        got = _epoch(shards["train"], clock, epoch, seed=None)["image"]
        policy = cfg.augment.image.model_copy(update={"cutout_p": cutout, "cutout_size": 0.5})
        np.testing.assert_allclose(got, _augmented(cfg, columns, epoch, policy), atol=1e-6)
        assert np.allclose(got, columns["image"]) == (cutout == 0.0), f"epoch {epoch}"


@pytest.mark.parametrize("overrides", [[], ["augment.image.rotate_p=0.0"]])
def test_an_identity_policy_feeds_the_rows_unchanged_without_a_clock(overrides):
    from raylm.data.arrays import SplitArrays, array_shards

    columns = _columns()
    shards, clock = array_shards(_cfg(*overrides), SplitArrays(columns, _columns(4)))
    assert clock is None
    got = _epoch(shards["train"], clock, 3, seed=None, batch_size=7)
    np.testing.assert_array_equal(got["image"], columns["image"])
