"""Batches straight from the kept (materialized) splits in this process, for one-worker training.

With one worker and decoded splits kept in the object store (``data.materialize``), Ray Data's
per-epoch machinery is overhead, not help: every epoch started a streaming executor, a split
coordinator, augmentation tasks in other processes, a shuffle buffer, and every validation pass
another executor, to move a few MB that already sit in this node's object store. On the image demo
in a sweep trial that cost most of the trial's speed (839 samples/s against the plain loop's 4,515,
issue 25). :class:`MemoryFeed` reads the clean splits once per process (zero-copy from the object
store, then one concatenation), and each epoch

- shuffles the whole train split (a seeded permutation per epoch: a true shuffle, not a buffer);
- augments each batch in this process with the same pure function Ray Data's stage runs
  (``raylm.data.augment.augment_batch``: a sample's draws depend on seed, epoch and its content
  only, so the augmented samples are the streamed path's, in another order);
- does that on a background thread a few batches ahead of the step (OpenCV's warp, numpy and
  torch's kernels release the GIL), so augmentation overlaps the optimizer's step.

Used when :func:`use_memory_feed` says so: a torch run on one worker whose splits were kept and
are at most ``MEMORY_FEED_MAX_BYTES``. Streamed sets and several workers keep Ray Data.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import ray.data

    from raylm.config import RaylmConfig

# The worker holds both splits on its heap (one copy): kept sets up to this size train from memory.
MEMORY_FEED_MAX_BYTES = 1 << 30
_PREFETCH = 4  # batches the thread runs ahead of the step
_VALIDATION_BATCH = 256  # evaluation only: batch size changes no metric (sums), only the speed

Augment = Callable[[dict[str, np.ndarray], int], dict[str, np.ndarray]]  # (batch, epoch) -> batch


def is_kept(dataset: Any) -> bool:
    """A dataset whose blocks are already computed and held in the object store."""
    from ray.data.dataset import MaterializedDataset

    return isinstance(dataset, MaterializedDataset)


def use_memory_feed(cfg: RaylmConfig, train: Any, validation: Any) -> bool:
    """One torch worker (not elastic) over kept splits of at most ``MEMORY_FEED_MAX_BYTES``."""
    if cfg.model.backend != "torch" or cfg.train.max_workers != 1 or cfg.train.min_workers != 1:
        return False
    if not (is_kept(train) and is_kept(validation)):
        return False
    return train.size_bytes() + validation.size_bytes() <= MEMORY_FEED_MAX_BYTES


def epoch_augmenter(cfg: RaylmConfig) -> Augment | None:
    """The run's training augmentation as ``(batch, epoch) -> batch`` (``augment.schedule`` applied
    per epoch), the same pure function as the Ray Data stage's; None when it is the identity."""
    from raylm.data.augment import augment_batch, is_identity, policy_for, scheduled_policy
    from raylm.data.modality import modality_record
    from raylm.data.schedule import run_schedule

    policy = policy_for(cfg)
    modality = cfg.task.modality
    schedule = run_schedule(cfg) if policy is not None else None
    if is_identity(policy) and all(is_identity(scheduled_policy(policy, schedule, e, modality))
                                   for e in range(len(schedule or []))):
        return None
    record = modality_record(modality)
    extra = record.augment_extra(cfg) if record.augment_extra else None
    seed = cfg.train.seed

    def augment(batch: dict[str, np.ndarray], epoch: int) -> dict[str, np.ndarray]:
        at_epoch = scheduled_policy(policy, schedule, epoch, modality) if schedule is not None else policy
        return augment_batch(batch, modality=modality, policy=at_epoch, seed=seed, epoch=epoch, extra=extra)

    return augment


# A kept dataset's id -> its columns: a reused sweep-trial actor reads the sweep's splits once. The id
# is Ray Data's dataset uuid (kept when the dataset is pickled to a trial), which names one
# materialize() of one split.
_read: dict[Any, dict[str, np.ndarray]] = {}


def read_columns(dataset: ray.data.Dataset) -> dict[str, np.ndarray]:
    """A kept dataset's columns as numpy arrays in this process (cached per dataset)."""
    key = getattr(dataset, "_uuid", None) or id(dataset)
    if key in _read:
        return _read[key]
    from raylm.data.arrays import dataset_columns

    columns = dataset_columns(dataset)
    if len(_read) >= 4:  # splits of earlier sweeps in a long-lived process
        _read.clear()
    _read[key] = columns
    return columns


def _to_torch(batch: dict[str, np.ndarray], device) -> dict[str, Any]:
    import torch

    return {name: torch.from_numpy(np.ascontiguousarray(value)).to(device) for name, value in batch.items()
            if value.dtype.kind in "biuf"}


class MemoryFeed:
    """Train batches (shuffled, augmented ahead on a thread) and validation batches from memory."""

    def __init__(self, train: dict[str, np.ndarray], validation: dict[str, np.ndarray], *, batch_size: int, seed: int,
                 augment: Augment | None, device=None) -> None:
        self.train, self.validation = train, validation  # columns (read_columns of the kept splits)
        self.batch_size, self.seed, self.augment, self.device = batch_size, seed, augment, device

    def __len__(self) -> int:
        return len(next(iter(self.train.values()))) if self.train else 0

    def epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self))

    def _train_batch(self, index: np.ndarray, epoch: int) -> dict[str, Any]:
        batch = {name: column[index] for name, column in self.train.items()}
        if self.augment is not None:
            batch = self.augment(batch, epoch)
        return _to_torch(batch, self.device)

    def batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        """``epoch``'s train batches; a thread prepares them ``_PREFETCH`` ahead and stops when the
        iterator is closed or dropped."""
        order = self.epoch_order(epoch)
        ready: queue.Queue = queue.Queue(maxsize=_PREFETCH)
        stop = threading.Event()
        done = object()

        def hand(item: Any) -> bool:  # False: the consumer went away (closed or dropped iterator)
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for start in range(0, len(order), self.batch_size):
                    if not hand(self._train_batch(order[start:start + self.batch_size], epoch)):
                        return
                hand(done)
            except BaseException as err:  # noqa: BLE001 - re-raised in the training thread
                hand(err)

        thread = threading.Thread(target=produce, daemon=True, name=f"raylm-memory-feed-epoch-{epoch}")
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    def validation_batches(self) -> Iterator[dict[str, Any]]:
        count = len(next(iter(self.validation.values()))) if self.validation else 0
        for start in range(0, count, _VALIDATION_BATCH):
            yield _to_torch({name: column[start:start + _VALIDATION_BATCH] for name, column in self.validation.items()},
                            self.device)
