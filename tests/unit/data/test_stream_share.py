"""``data.stream_memory`` shared by a sweep's concurrent trials (raylm/data/shards.py ``shared_stream_memory``):
each trial executes the streamed splits on its own, so a share of the store is divided between them."""

from __future__ import annotations

import pytest

from raylm.config import load_config
from raylm.data.shards import shared_stream_memory

IMAGE = ["task.modality=image", "model.name=seed_cnn", "data.block_mib=8"]


@pytest.mark.parametrize(("overrides", "pipelines", "expected"), [
    ([], 4, 0.125),  # the default half of the store, four trials at once: an eighth each
    ([], 1, 0.5),  # one stream keeps the whole share
    (["data.stream_memory=0.3"], 3, 0.1),
    (["data.stream_memory=48"], 4, 48),  # MiB are a per-stream figure: kept
])
def test_a_share_of_the_store_is_divided_between_streams(overrides, pipelines, expected):
    cfg = load_config(None, [*IMAGE, *overrides])
    shared = shared_stream_memory(cfg, pipelines)
    assert shared.data.stream_memory == pytest.approx(expected)
    assert cfg.data.stream_memory == load_config(None, [*IMAGE, *overrides]).data.stream_memory  # the caller's config kept
    assert shared.model_dump(exclude={"data"}) == cfg.model_dump(exclude={"data"})


MIB = 2**20


@pytest.mark.parametrize(("budget", "workers", "expected"), [
    (100_000_000, 2, 100_000_000 // 8),  # a 200 MB store's half, two workers: ~12 MiB blocks, not Ray's 128
    (100_000_000, 1, 100_000_000 // 6),
    (3_500_000_000, 2, 128 * MIB),  # a big store keeps Ray's default
    (4 * MIB, 4, MIB),  # never below 1 MiB
    (None, 2, 128 * MIB),  # no Ray running to take the share of: Ray's default
])
def test_block_mib_0_lowers_rays_block_size_to_the_streams_budget(budget, workers, expected):
    """Two training workers streaming with Ray's 128 MiB blocks from a 200 MB store spilled 469-502 MiB of a
    578 MiB epoch (a new user's `ray start` head; 1 worker, or data.block_mib=8, spilled none)."""
    from raylm.data.shards import auto_block_bytes

    assert auto_block_bytes(budget, workers, 128 * MIB) == expected


def test_the_stream_takes_the_fitted_block_size_and_an_explicit_one_wins():
    from ray.data import DataContext

    from raylm.data.shards import bounded_stream

    default = DataContext.get_current().target_max_block_size
    for overrides, expected in (([], 100 * MIB // 8), (["data.block_mib=32"], 32 * MIB)):
        cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", "train.num_workers=2",
                                 "data.stream_memory=100", *overrides])
        with bounded_stream(cfg):
            assert DataContext.get_current().target_max_block_size == expected
        assert DataContext.get_current().target_max_block_size == default
