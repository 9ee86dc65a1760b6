"""MemoryFeed: one-worker training's batches from memory: every sample once per epoch, augmented
exactly as Ray Data's augmentation stage would augment it for that epoch, prepared on a thread."""

import threading
import time

import numpy as np
import pytest

from raylm.config import load_config
from raylm.data.augment import augment_batch
from raylm.train.memory_feed import MemoryFeed, epoch_augmenter


def _columns(n=100, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.random((n, 32, 32, 3), dtype=np.float32), "label": np.arange(n, dtype=np.int64)}


def _cfg(*overrides):
    return load_config(None, ["task.modality=image", "model.name=seed_cnn", "train.seed=7", *overrides])


def test_each_epoch_yields_every_sample_once_augmented_as_the_ray_data_stage_would_for_that_epoch():
    cfg = _cfg("augment.image.rotate_p=1.0", "augment.image.max_rotation=30", "augment.image.hflip_p=0.5")
    train = _columns()
    feed = MemoryFeed(train, _columns(10), batch_size=32, seed=7, augment=epoch_augmenter(cfg))
    orders = []
    for epoch in (0, 1):
        batches = list(feed.batches(epoch))
        assert [len(b["label"]) for b in batches] == [32, 32, 32, 4]
        ids = np.concatenate([b["label"].numpy() for b in batches])
        assert sorted(ids.tolist()) == list(range(100))  # each sample exactly once
        images = np.concatenate([b["image"].numpy() for b in batches])
        # The oracle: the stage's pure function on the clean samples, for this epoch (any batching).
        expected = augment_batch({"image": train["image"][ids], "label": ids}, modality="image",
                                 policy=cfg.augment.image, seed=7, epoch=epoch)["image"]
        np.testing.assert_array_equal(images, expected)
        assert not np.allclose(images, train["image"][ids])  # augmented, not passed through
        orders.append(ids)
    assert not np.array_equal(orders[0], orders[1])  # a new shuffle every epoch


def test_identity_policy_adds_no_augmentation_and_validation_comes_whole_in_order():
    assert epoch_augmenter(_cfg()) is None
    train, validation = _columns(40), _columns(300, seed=1)
    feed = MemoryFeed(train, validation, batch_size=16, seed=0, augment=None)
    first = next(iter(feed.batches(0)))
    np.testing.assert_array_equal(first["image"].numpy(), train["image"][first["label"].numpy()])
    got = list(feed.validation_batches())
    np.testing.assert_array_equal(np.concatenate([b["label"].numpy() for b in got]), validation["label"])


def test_an_abandoned_epoch_stops_its_thread_and_an_augmentation_error_reaches_the_consumer():
    def feed_threads():
        return [t for t in threading.enumerate() if t.name.startswith("raylm-memory-feed")]

    feed = MemoryFeed(_columns(400), _columns(4), batch_size=8, seed=0, augment=None)
    batches = feed.batches(3)
    next(batches)
    batches.close()  # e.g. a trial stopped mid-epoch
    deadline = time.monotonic() + 10
    while feed_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not feed_threads()

    def broken(batch, epoch):
        raise ValueError(f"epoch {epoch}: bad policy")

    with pytest.raises(ValueError, match="epoch 2: bad policy"):
        list(MemoryFeed(_columns(20), _columns(4), batch_size=8, seed=0, augment=broken).batches(2))
