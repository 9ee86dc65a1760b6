"""The schedule a PBT sweep learned: per epoch, the values along the best trial's lineage.

Every epoch of a population trial records the values it trained with and the trial that trained it
(``hyperparameters``, ``trained_by`` in raylm/train/loop.py), and that history travels inside each
checkpoint. An exploit hands the donor's checkpoint, history included, to the trial that copies
it, so the final checkpoint of a trial holds its whole lineage: the donor's epochs up to the exploit,
then its own. No parsing of Tune's ``pbt_policy_*.txt`` logs: they name trial tags, not epochs' values.

``schedule.json`` (format: raylm/data/schedule.py) is written beside the sweep's tables; an
``exploits`` entry marks each epoch where the lineage passed from one trial to another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raylm.atomic import atomic_write_text
from raylm.data.schedule import SCHEDULE_VERSION

SCHEDULE_FILE = "schedule.json"


def lineage_of(result, options: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``[{"epoch", "trial", "values"}]`` from the history in a training result's latest checkpoint."""
    from raylm.train.checkpoint import checkpoint_location, read_stored_meta

    history = read_stored_meta(checkpoint_location(result.checkpoint, options)).get("history", [])
    return [{"epoch": int(h["epoch"]), "trial": h.get("trained_by"), "values": h.get("hyperparameters", {}),
             "val_accuracy": h.get("val_accuracy")} for h in history]


def schedule_from_lineage(lineage: list[dict[str, Any]], *, trial_id: str, scheduler: str) -> dict[str, Any]:
    """The ``schedule.json`` document of one trial's lineage."""
    keys = sorted({key for entry in lineage for key in entry["values"]})
    exploits = [{"epoch": now["epoch"], "from": before["trial"], "to": now["trial"]}
                for before, now in zip(lineage, lineage[1:]) if now["trial"] != before["trial"]]
    return {"version": SCHEDULE_VERSION, "scheduler": scheduler, "trial_id": trial_id, "epochs": len(lineage),
            "keys": keys, "per_epoch": lineage, "exploits": exploits}


def write_schedule(tune_dir: Path, best: dict[str, Any] | None, scheduler: str, *, record_name: str) -> Path | None:
    """``<tune_dir>/schedule.json`` from the best trial's record (``record_name``, raylm/tune/trial.py);
    None when no trial completed with a lineage."""
    if best is None:
        return None
    record_path = _trial_record(tune_dir, best, record_name)
    if record_path is None:
        return None
    # The record's directory names the trial (the best row may be its dense candidate, "<trial>-dense").
    lineage = json.loads(record_path.read_text()).get("lineage")
    if not lineage:
        return None
    path = Path(tune_dir) / SCHEDULE_FILE
    atomic_write_text(path, json.dumps(schedule_from_lineage(lineage, trial_id=record_path.parent.name, scheduler=scheduler),
                                       indent=2))
    return path


def _trial_record(tune_dir: Path, row: dict[str, Any], record_name: str) -> Path | None:
    checkpoint = row.get("checkpoint")  # <trials>/<trial_id>/train/checkpoint_n
    candidates = [Path(checkpoint).parent.parent / record_name] if checkpoint else []
    candidates.append(Path(tune_dir) / "trials" / str(row["trial_id"]) / record_name)
    return next((c for c in candidates if c.is_file()), None)
