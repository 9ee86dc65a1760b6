"""Decoded splits shared by every trial of a sweep, instead of decoded again by every trial.

A sweep's trials differ in augmentation, training and compression, rarely in what the data
decodes to. The sweep decodes (and, with ``data.materialize``, materializes) the splits once on
the driver and hands the datasets to every trial; inside a trial, :func:`sharing` makes
``build_datasets`` (training) and compression's own ``build_datasets`` call start from them. A
trial whose config decodes differently (a searched ``data.*`` field) gets a different
:func:`decode_key` and decodes its own, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raylm.data.modality import modality_record

if TYPE_CHECKING:
    import ray.data

    from raylm.config import RaylmConfig
    from raylm.data.arrays import SplitArrays


@dataclass
class DecodedSplits:
    """Clean (un-augmented) model-ready splits and what was learned reading them."""

    key: str  # decode_key of the config they were decoded for
    train: ray.data.Dataset
    validation: ray.data.Dataset
    labels: list[str]
    source: str
    fingerprint: str
    # The same splits as numpy columns, for trials that train in their own process without Ray Data
    # (raylm/data/arrays.py: a population sweep over a set that fits in memory); None: Ray Data only.
    arrays: SplitArrays | None = None


_shared: ContextVar[DecodedSplits | None] = ContextVar("raylm_shared_decoded_splits", default=None)


def decode_key(cfg: RaylmConfig) -> str:
    """Everything that decides the decoded splits: the task, the data section, and for text the tokenizer."""
    parts = {"task": cfg.task.model_dump(mode="json"), "data": cfg.data.model_dump(mode="json")}
    record = modality_record(cfg.task.modality)
    if record.decode_identity is not None:
        parts = record.decode_identity(cfg, parts)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def sharing(decoded: DecodedSplits | None) -> Iterator[None]:
    """Within the block, ``build_datasets`` of a config with ``decoded.key`` reuses ``decoded``."""
    token = _shared.set(decoded)
    try:
        yield
    finally:
        _shared.reset(token)


def shared_for(cfg: RaylmConfig) -> DecodedSplits | None:
    decoded = _shared.get()
    return decoded if decoded is not None and decoded.key == decode_key(cfg) else None
