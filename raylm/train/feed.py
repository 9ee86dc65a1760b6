"""The next epoch's training batches started while the current epoch validates, reports and checkpoints.

Each epoch's ``iter_torch_batches`` starts a Ray Data pipeline (an executor, the augmentation tasks,
the shuffle buffer filling): on the image demo that first batch cost 0.3-0.5 s of a 2.5 s epoch, every
epoch, with the trainer idle. :class:`EpochFeed` starts the next epoch's pipeline on a thread as
soon as an epoch's batches are consumed and takes its first batch there, so that start overlaps
the validation pass, the report and the checkpoint instead of following them.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

MakeBatches = Callable[[int], Iterable[Any]]  # epoch -> that epoch's batches (sets what the epoch needs first)


class EpochFeed:
    """``batches(epoch)``: the epoch's iterator, started early if :meth:`start` was called for it."""

    def __init__(self, make: MakeBatches) -> None:
        self._make = make
        self._started: tuple[int, threading.Thread, dict[str, Any]] | None = None

    def start(self, epoch: int) -> None:
        """Build ``epoch``'s iterator and take its first batch on a daemon thread (nothing else touches
        the iterator until :meth:`batches` has joined the thread)."""
        held: dict[str, Any] = {}

        def first_batch() -> None:
            try:
                iterator = iter(self._make(epoch))
                held["iterator"] = iterator
                held["first"] = next(iterator)
            except StopIteration:
                held["empty"] = True
            except BaseException as err:  # noqa: BLE001 - re-raised in the training thread by batches()
                held["error"] = err

        thread = threading.Thread(target=first_batch, daemon=True, name=f"raylm-feed-epoch-{epoch}")
        thread.start()
        self._started = (epoch, thread, held)

    def batches(self, epoch: int) -> Iterator[Any]:
        started, self._started = self._started, None
        if started is None or started[0] != epoch:
            return iter(self._make(epoch))
        _, thread, held = started
        thread.join()
        if "error" in held:
            raise held["error"]
        if held.get("empty"):
            return iter(())
        return itertools.chain([held["first"]], held["iterator"])
