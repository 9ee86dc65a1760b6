"""A learned hyperparameter schedule (``schedule.json``, written by a PBT sweep) read back for a run.

``augment.schedule: <schedule.json>`` makes training follow it epoch by epoch: the augmentation stage
takes each epoch's ``augment.<modality>.*`` values (the fixed ``augment.<modality>`` section fills the
rest) and the training loop each epoch's ``train.lr`` (docs/pbt.md).

Stretching: a schedule learned over ``S`` epochs replayed over ``E`` epochs gives retrain epoch ``e``
(0-based) the values of schedule epoch ``floor(e * S / E)``: each learned epoch covers ``E / S``
retrain epochs (``E = S``: one to one; ``E < S``: learned epochs are skipped evenly). PBA replays its
schedule the same way, by the fraction of training done.

The file is JSON (never pickle), written atomically by raylm/tune/schedule.py::

    {"version": 1, "scheduler": "pbt", "trial_id": "...", "epochs": S,
     "keys": ["augment.image.rotate_p", "train.lr"],
     "per_epoch": [{"epoch": 1, "trial": "...", "values": {"augment.image.rotate_p": 0.3, ...}}, ...],
     "exploits": [{"epoch": 3, "from": "<donor trial>", "to": "<trial>"}]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raylm.errors import RaylmError

SCHEDULE_VERSION = 1


class ScheduleError(RaylmError):
    """An ``augment.schedule`` file that cannot be followed."""


def read_schedule(path: str | Path) -> dict[str, Any]:
    """The schedule file, checked: a version raylm reads and one ``values`` dict per epoch."""
    where = Path(path).expanduser()
    try:
        schedule = json.loads(where.read_text())
    except (OSError, ValueError) as err:
        raise ScheduleError(f"augment.schedule: cannot read {where}: {err}") from None
    if not isinstance(schedule, dict) or schedule.get("version") != SCHEDULE_VERSION:
        raise ScheduleError(f"augment.schedule: {where} is not a raylm schedule (version {SCHEDULE_VERSION})")
    per_epoch = schedule.get("per_epoch")
    if not isinstance(per_epoch, list) or not per_epoch:
        raise ScheduleError(f"augment.schedule: {where} has no per-epoch values (per_epoch: a list of "
                            '{"epoch": n, "values": {...}}, one per epoch from 1)')
    for index, entry in enumerate(per_epoch):
        if not isinstance(entry, dict) or not isinstance(entry.get("values"), dict):
            raise ScheduleError(f"augment.schedule: {where} per_epoch[{index}] is {json.dumps(entry)[:80]}, not "
                                '{"epoch": n, "values": {...}}')
    # Entries are replayed in list order; an epoch label that disagrees with its place would be followed at
    # another epoch than the file says (a user's schedule listed epochs 3, 1, 2 and trained 3's values first).
    labels = [entry.get("epoch") for entry in per_epoch]
    if labels != list(range(1, len(per_epoch) + 1)):
        raise ScheduleError(f"augment.schedule: {where} per_epoch lists epochs {labels[:12]}; it needs one entry per "
                            f"epoch, in order, from 1 (1..{len(per_epoch)})")
    declared = schedule.get("epochs", len(per_epoch))
    if declared != len(per_epoch):
        raise ScheduleError(f"augment.schedule: {where} says epochs={declared!r} but per_epoch has {len(per_epoch)} "
                            "entries")
    return schedule


def check_schedule(cfg) -> None:
    """``augment.schedule`` read and every epoch's values validated now, before Ray starts (a missing file
    surfaced after Ray had started and the data decoded; a bad value as a bare pydantic error naming
    neither the file nor the epoch): each key one this run follows (``augment.<modality>.*`` or
    ``train.lr``), each value within its field's range. ScheduleError names the file, epoch and key."""
    if not cfg.augment.schedule:
        return
    from pydantic import ValidationError

    where = Path(cfg.augment.schedule).expanduser()
    schedule = read_schedule(where)
    modality = cfg.task.modality
    policy = getattr(cfg.augment, modality)
    for entry in schedule["per_epoch"]:
        epoch, values = entry.get("epoch", "?"), entry["values"]
        for key, value in values.items():
            if not (key.startswith(f"augment.{modality}.") or key == "train.lr"):
                raise ScheduleError(f"augment.schedule: {where} epoch {epoch}: {key} is not an augment.{modality}.* "
                                    "key or train.lr (what a run follows)")
            if key == "train.lr" and not (isinstance(value, (int, float)) and value > 0):
                raise ScheduleError(f"augment.schedule: {where} epoch {epoch}: train.lr must be a number > 0, got {value!r}")
        try:
            type(policy).model_validate(policy.model_dump() | policy_updates(values, modality))
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ScheduleError(f"augment.schedule: {where} epoch {epoch}: augment.{modality}.{field}: "
                                f"{first['msg']} (got {first.get('input')!r})") from None


def stretched(schedule: dict[str, Any], epochs: int) -> list[dict[str, Any]]:
    """``epochs`` dicts of ``{dotted key: value}``: epoch ``e`` takes learned epoch ``floor(e * S / epochs)``."""
    learned = [dict(entry["values"]) for entry in schedule["per_epoch"]]
    return [learned[e * len(learned) // epochs] for e in range(epochs)]


def run_schedule(cfg) -> list[dict[str, Any]] | None:
    """``cfg.augment.schedule`` stretched to ``cfg.train.epochs``; None when the run has none."""
    if not cfg.augment.schedule:
        return None
    return stretched(read_schedule(cfg.augment.schedule), cfg.train.epochs)


def policy_updates(values: dict[str, Any], modality: str) -> dict[str, Any]:
    """The ``augment.<modality>.*`` entries of one epoch's values, as field names of that section."""
    prefix = f"augment.{modality}."
    return {key.removeprefix(prefix): value for key, value in values.items() if key.startswith(prefix)}


def policy_at(policy: Any, per_epoch: list[dict[str, Any]] | None, epoch: int, modality: str) -> Any:
    """The augmentation policy of ``epoch`` (0-based): the fixed policy with that epoch's scheduled
    values (validated, so a hand-edited schedule cannot set a probability of 1.5). Epochs past the
    schedule keep its last values."""
    if not per_epoch:
        return policy
    updates = policy_updates(per_epoch[min(epoch, len(per_epoch) - 1)], modality)
    return type(policy).model_validate(policy.model_dump() | updates) if updates else policy
