"""``data.materialize: auto``: keep the decoded splits in Ray's object store when they fit in
``data.materialize_share`` of it, so every epoch after the first skips reading and decoding; stream
larger data. The choice is made once per decode, from the sample count and one decoded sample's
size, and printed with its numbers."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from raylm.config import RaylmConfig


class ModalityRecord(Protocol):
    """What this module reads of a ``raylm.data.modality.Modality``: the choice needs no more of it."""

    name: str
    inputs: tuple[str, ...]

    def settings(self, cfg: RaylmConfig) -> Any: ...

    def sample_shape(self, settings: Any) -> tuple[int, ...]: ...

# INFO on its own: the console handler on "raylm" shows marked INFO lines; other raylm INFO stays quiet.
log = logging.getLogger("raylm.data.notes")
log.setLevel(logging.INFO)


@dataclass(frozen=True)
class MaterializeChoice:
    keep: bool
    reason: str


def sample_bytes(record: ModalityRecord, cfg: RaylmConfig) -> int:
    """One decoded sample as the model gets it: float32 images and frames, int64 token ids and mask, the label."""
    elements = math.prod(record.sample_shape(record.settings(cfg)))
    itemsize = 8 if record.name == "text" else 4
    return elements * itemsize * len(record.inputs) + 8


def choose(cfg: RaylmConfig, record: ModalityRecord, samples: int | None) -> MaterializeChoice:
    """``data.materialize`` resolved: true/false as set; auto from the decoded size vs the object store."""
    setting = cfg.data.materialize
    if setting != "auto":
        return MaterializeChoice(bool(setting), f"data.materialize={str(setting).lower()}")
    import ray

    from raylm.capacity import read_capacity

    if read_capacity().multi_node:
        # Kept blocks live in the object store of the node that decoded them: a lost node would take a
        # split with it, and a restarted worker group would wait on its blocks for good (seen in the
        # node-loss test). Streamed splits are re-read from the source by whichever nodes remain.
        return MaterializeChoice(False, "data.materialize=auto: a multi-node cluster (or one that can grow): "
                                        "streamed, so a lost node loses no kept split (data.materialize=true keeps them)")
    store = ray.cluster_resources().get("object_store_memory", 0)
    budget = cfg.data.materialize_share * store
    if samples is None:
        return MaterializeChoice(False, "data.materialize=auto: the sample count is unknown (an unchecked remote "
                                        "source): streaming")
    size = samples * sample_bytes(record, cfg)
    keep = 0 < size <= budget
    verdict = "decoded once and kept" if keep else "streamed, decoded every epoch"
    return MaterializeChoice(keep, f"data.materialize=auto: {samples} samples x {sample_bytes(record, cfg)} B = "
                                   f"{size / 2**20:.1f} MiB decoded {'<=' if keep else '>'} "
                                   f"data.materialize_share={cfg.data.materialize_share:g} of the "
                                   f"{store / 2**30:.1f} GiB object store ({budget / 2**20:.0f} MiB): {verdict}")


_announced: set[str] = set()  # the reasons already on this process's console
_QUIET = {"on": False}  # a side read (the report's augmentation preview): its choice goes to the log only


def announce(choice: MaterializeChoice) -> None:
    """On the console of ``raylm train``/``tune``/``pipeline`` once (an INFO line marked for it); the
    same choice again (a pipeline decodes for the sweep, the retrain and compression) only in the log."""
    first = choice.reason not in _announced and not _QUIET["on"]
    _announced.add(choice.reason)
    log.info("[raylm data] %s", choice.reason, extra={"console": first})


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """Decodes in the block announce their choice in the log only: ``raylm report`` reads a few samples for
    its preview, and a "[raylm data] data.materialize=..." line on its console said nothing about the report."""
    before, _QUIET["on"] = _QUIET["on"], True
    try:
        yield
    finally:
        _QUIET["on"] = before
