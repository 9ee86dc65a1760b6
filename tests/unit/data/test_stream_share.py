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
