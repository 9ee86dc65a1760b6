"""``<run>/report.html`` for a pipeline, a sweep or a training run: ``write_report(run_dir)``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from raylm.report.collect import PREVIEW_PNG, PREVIEW_TXT, newest_checkpoint_meta, read_json, read_run

REPORT = "report.html"
log = logging.getLogger(__name__)


def write_report(run_dir: str | os.PathLike[str], *, preview: bool = False) -> Path:
    """Write ``<run_dir>/report.html`` (atomically) and return its path. ``preview``: also make the
    augmentation preview if the run has none yet (reads training samples: needs Ray)."""
    from raylm.report.page import render

    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir}: not found")
    if preview and not (run_dir / PREVIEW_PNG).is_file() and not (run_dir / PREVIEW_TXT).is_file():
        make_preview(run_dir)
    html = render(read_run(run_dir))
    tmp = run_dir / f".{REPORT}.tmp"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, run_dir / REPORT)
    return run_dir / REPORT


def _run_config(run_dir: Path):
    """The config the run trained with: the retrain's (or a training run's) checkpoint, else the sweep's."""
    from raylm.config import validate_config

    meta = newest_checkpoint_meta(run_dir / "train")
    tree = (meta or {}).get("config") or read_json(run_dir / "tune" / "raylm_sweep.json")
    return validate_config(tree) if tree else None


def make_preview(run_dir: Path) -> Path | None:
    """The augmentation preview of the run's policy, beside the report (PNG; text: a .txt)."""
    from raylm.data.augment_preview import preview
    from raylm.runtime import ensure_ray, quiet_data_progress

    cfg = _run_config(run_dir)
    if cfg is None:
        return None
    from raylm.data import materialize

    ensure_ray()
    quiet_data_progress()
    try:
        with materialize.quietly():
            result = preview(cfg, run_dir / PREVIEW_PNG)
    except Exception as err:  # the report is still worth writing without it
        log.warning("augmentation preview skipped: %s: %s", type(err).__name__, err)
        return None
    if isinstance(result, list):
        tmp = run_dir / f".{PREVIEW_TXT}.tmp"
        tmp.write_text("\n".join(result))
        os.replace(tmp, run_dir / PREVIEW_TXT)
        return run_dir / PREVIEW_TXT
    return result
