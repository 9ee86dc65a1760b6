"""Shuffling a sharded dataset without holding it anywhere.

A large set is many shards (parquet, JSONL or CSV files, or a folder's image/audio files) that Ray
Data reads lazily, a few blocks at a time. Two cheap shuffles together stand in for a global one:

- **shard order** (``data.shuffle_files``): Ray Data reads the training files in a new order each
  epoch (seeded by ``train.seed``, re-seeded per execution), so no epoch sees the shards in the
  same sequence;
- **a local shuffle buffer** (``data.shuffle_buffer``) on each training worker mixes rows of the
  blocks it is streaming (several shards at once), bounded by the buffer's rows.

Rows inside one shard should not be sorted by class: shard order and a buffer of a few hundred
rows cannot undo a shard that holds one class (``raylm data synth`` writes mixed shards).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylm.config import RaylmConfig


def file_shuffle(cfg: RaylmConfig) -> Any:
    """The ``shuffle`` argument of Ray Data's file readers for the training split: None, or a
    seeded FileShuffleConfig whose order changes with every execution (epoch)."""
    if not cfg.data.shuffle_files:
        return None
    from ray.data import FileShuffleConfig

    return FileShuffleConfig(seed=cfg.train.seed, reseed_after_execution=True)


@contextlib.contextmanager
def block_size(cfg: RaylmConfig) -> Iterator[None]:
    """Datasets created inside take ``data.block_mib`` as Ray Data's target block size (a dataset
    keeps the context it was created with, and so do the stages derived from it). Ray's default,
    128 MiB, is sized for an object store of 30 % of RAM: with a small store two such blocks fill
    it and the rest spills to disk."""
    from ray.data import DataContext

    context = DataContext.get_current()
    before = context.target_max_block_size
    if cfg.data.block_mib:
        context.target_max_block_size = cfg.data.block_mib * 2**20
    try:
        yield
    finally:
        context.target_max_block_size = before


def local_shuffle(cfg: RaylmConfig, *, epoch: int, rank: int, world: int) -> dict[str, int]:
    """``iter_torch_batches`` / ``to_tf`` arguments: each worker's shuffle buffer, seeded per epoch and rank."""
    size = cfg.data.shuffle_buffer or max(4 * cfg.train.batch_size, 256)
    return {"local_shuffle_buffer_size": size, "local_shuffle_seed": cfg.train.seed * 1000 + epoch * world + rank}
