"""``data.prefetch_batches`` (raylm/data/shards.py): how many decoded training batches a worker's Ray Data
iterator prepares ahead, from the bytes of one batch when not set."""

from __future__ import annotations

import pytest

from raylm.config import load_config
from raylm.data.shards import prefetch_batches

IMAGE = ["task.modality=image", "model.name=seed_cnn"]


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], 8),  # 32x32x3 float32 (+ the label) x 64 = 0.75 MiB a batch: 85 fit in 64 MiB, capped at 8
    (["data.image.size=224"], 2),  # 36.7 MiB a batch: one fits, floor of 2
    (["data.image.size=96", "train.batch_size=128"], 4),  # 96x96x3 float32 x 128 = 13.5 MiB a batch: 4 fit
    (["data.prefetch_batches=3", "data.image.size=224"], 3),  # set: used as given
])
def test_prefetch_follows_the_bytes_of_one_batch_unless_set(overrides, expected):
    cfg = load_config(None, [*IMAGE, *overrides])
    assert prefetch_batches(cfg) == expected
