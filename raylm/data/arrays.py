"""Decoded splits held as numpy columns, fed to a one-worker in-process training loop without Ray Data.

Why: a PBT trial restarts at every perturbation when the cluster holds fewer trials than the
population (issue 29). Each restart built a new Ray Data pipeline (the augmentation stage over the
materialized splits) and each epoch executed it again, train and validation: on a loaded 2-core
machine a restarted segment's first batch waited 80-100 s for Ray Data's tasks and workers. A set
that fits in memory needs none of it: the sweep takes the decoded splits out of Ray Data once
(:func:`hold_in_memory`; ``tune.with_parameters`` puts them in the object store once, each trial
actor reads the arrays zero-copy) and a trial's loop iterates :class:`ArrayShard` s, which stand
in for Ray Data shards (``iter_torch_batches``): a seeded permutation per epoch, the modality's
augmentation (OpenCV for images) applied per batch in the trial's own process.

The augmentation is the same function of (train.seed, epoch, sample content) as the Ray Data stage
(``raylm/data/augment.py``), so a sample sees the same draws on either path; the epoch comes from a
process-local epoch clock the loop sets as it sets the cluster's (``augment.set_epoch``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from raylm.config import RaylmConfig


@dataclass
class SplitArrays:
    """Both clean splits as ``{column: array}`` (rows aligned across columns)."""

    train: dict[str, np.ndarray]
    validation: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for split in (self.train, self.validation) for a in split.values())


def dataset_columns(dataset) -> dict[str, np.ndarray]:
    """A (kept) dataset's rows as ``{column: array}`` in this process: one concatenation per column."""
    parts = list(dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0))
    return {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in (parts[0] if parts else {})}


def hold_in_memory(decoded, cfg: RaylmConfig):
    """``decoded`` (``raylm.data.decoded.DecodedSplits``) with its ``arrays`` filled when both splits are materialized (kept in the
    object store: ``data.materialize``) and fit in ``data.materialize_share`` of it; else unchanged
    (a streamed set stays on Ray Data)."""
    import ray
    from ray.data.dataset import MaterializedDataset

    if not (isinstance(decoded.train, MaterializedDataset) and isinstance(decoded.validation, MaterializedDataset)):
        return decoded
    budget = cfg.data.materialize_share * ray.cluster_resources().get("object_store_memory", 0)
    if decoded.train.size_bytes() + decoded.validation.size_bytes() > budget:
        return decoded
    decoded.arrays = SplitArrays(dataset_columns(decoded.train), dataset_columns(decoded.validation))
    return decoded


class ArrayShard:
    """What the training loop reads of a Ray Data shard (``iter_torch_batches``), over numpy columns.

    ``augment``: ``augment_batch``'s keyword arguments (modality, policy, seed, extra) and the run's
    ``schedule``, for the train split; ``clock``: the process-local clock id the loop sets each epoch."""

    def __init__(self, columns: dict[str, np.ndarray], *, augment: dict[str, Any] | None = None,
                 clock: str | None = None) -> None:
        self.columns, self.augment, self.clock = columns, augment, clock
        self.rows = len(next(iter(columns.values()))) if columns else 0

    def count(self) -> int:
        return self.rows

    def iter_torch_batches(self, *, batch_size: int | None = 256, device=None, local_shuffle_seed: int | None = None,
                           drop_last: bool = False, **_: Any) -> Iterator[dict[str, Any]]:
        """Batches of torch tensors; shuffled (a permutation of all rows: a buffer's shuffle and better)
        when ``local_shuffle_seed`` is given, as the loop gives it for the train split only."""
        from raylm.data.augment import local_epoch

        order = (np.random.default_rng(local_shuffle_seed).permutation(self.rows) if local_shuffle_seed is not None
                 else np.arange(self.rows))
        epoch = local_epoch(self.clock)  # read now: the loop sets the epoch before asking for its batches
        return self._batches(order, batch_size or self.rows, device, epoch, drop_last)

    def _batches(self, order, batch_size, device, epoch, drop_last) -> Iterator[dict[str, Any]]:
        import torch

        from raylm.data.augment import augment_batch, scheduled_policy

        policy = None
        if self.augment is not None:
            policy = self.augment["policy"]
            if self.augment.get("schedule") is not None:
                policy = scheduled_policy(policy, self.augment["schedule"], epoch, self.augment["modality"])
        for start in range(0, self.rows, batch_size):
            rows = order[start:start + batch_size]
            if drop_last and len(rows) < batch_size:
                return
            batch = {name: values[rows] for name, values in self.columns.items()}
            if policy is not None:
                batch = augment_batch(batch, modality=self.augment["modality"], policy=policy, seed=self.augment["seed"],
                                      epoch=epoch, extra=self.augment.get("extra"))
            yield {name: torch.as_tensor(values, device=device) for name, values in batch.items()}


def array_shards(cfg: RaylmConfig, arrays: SplitArrays) -> tuple[dict[str, ArrayShard], str | None]:
    """``({"train", "validation"}: ArrayShard, clock id)`` for an in-process loop over ``arrays``; the
    clock id (None without augmentation) goes where the Ray Data path's augment_run_id goes."""
    from raylm.data.augment import is_identity, policy_for, register_local_clock, scheduled_policy
    from raylm.data.modality import modality_record
    from raylm.data.schedule import run_schedule

    policy = policy_for(cfg)
    schedule = run_schedule(cfg) if policy is not None else None
    augment = clock = None
    if not (is_identity(policy) and all(is_identity(scheduled_policy(policy, schedule, e, cfg.task.modality))
                                        for e in range(len(schedule or [])))):
        record = modality_record(cfg.task.modality)
        augment = {"modality": record.name, "policy": policy, "seed": cfg.train.seed, "schedule": schedule,
                   "extra": record.augment_extra(cfg) if record.augment_extra else None}
        clock = register_local_clock(f"local-{uuid.uuid4().hex}")
    return {"train": ArrayShard(arrays.train, augment=augment, clock=clock),
            "validation": ArrayShard(arrays.validation)}, clock
