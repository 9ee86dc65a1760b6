"""data/'s second floor: the acceptance rules, as functions of values (no file, no Ray, no config lookup).

What a sample must be to train (its decoder accepts it, its label is a class), what a label is as
text, and what a checked data set must show (``enforce``: the bad-sample policy and two classes).
The data check (``check.py``), training's decode stage and serving apply these same functions;
the decoders themselves belong to the modalities one floor up and are passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raylm.data.sources import DataError

if TYPE_CHECKING:
    from raylm.config import DataConfig

__all__ = ["DataError", "enforce", "first_bad_message", "format_summary", "label_text", "sample_problem"]


def label_text(value: Any) -> str:
    """A label as text; a missing value is the empty string (a bad row, never a class). Integral
    floats read back as integers: a label column with a blank row arrives as floats in numpy."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def sample_problem(decode: Callable[[Any, Any, Any], Any], value: Any, label: str, settings: Any,
                   label_index: dict[str, int] | None, limits: Any = None) -> str | None:
    """Why a sample is refused, or None: ``decode`` (a modality's, the one serving calls) must accept
    the value, and the label must be a class. The value's problem is named first."""
    try:
        decode(value, settings, limits)
    except Exception as err:  # any decoder failure is a bad sample, never a crashed run
        return str(err) or "cannot be decoded"
    if not label:
        return "empty label"
    if label_index is not None and label not in label_index:
        return f"label {label!r} is not one of task.labels"
    return None


def first_bad_message(bad: dict[str, Any]) -> str:
    where = bad["file"] + (f", row {bad['row']}" if bad.get("row") else "")
    return (f"{where}: {bad['reason']} (data.on_bad_input=fail stops at the first bad sample; "
            "data.on_bad_input=skip leaves bad ones out and lists them in <run>/data_report.json)")


FEW_SAMPLES = 10  # a class with fewer accepted samples is named in the check's summary


def format_summary(report: dict[str, Any], where: Path | None) -> str:
    classes = ", ".join(f"{label} {n}" for label, n in report["classes"].items())
    line = (f"[raylm data] checked {report['checked']} samples: {report['accepted']} accepted ({classes}), "
            f"{report['bad_count']} bad")
    if report["bad_count"]:
        line += " skipped" if report["on_bad_input"] == "skip" else ""
    if report["ignored"]:
        line += f", {len(report['ignored'])} files ignored by the layout rule"
    # A class whose every sample was bad is no class of the run: it leaves the labels, which changes the model.
    lost = sorted({b["label"] for b in report["bad"] if b.get("label")} - set(report["classes"]))
    if lost:
        line += f"; no sample of {', '.join(lost)} accepted: not a class of this run"
    # A class of a handful of samples (a stray label, a typo) still becomes an output of the model, which can
    # hardly learn it and whose validation split may hold none of it: said, not refused.
    few = {label: n for label, n in report["classes"].items() if n < FEW_SAMPLES}
    if few:
        named = ", ".join(f"{label} has {n} sample" + "s" * (n != 1) for label, n in few.items())
        line += (f"; WARNING: {named}: "
                 f"fewer than {FEW_SAMPLES}, the model can hardly learn {'it' if len(few) == 1 else 'them'} "
                 "(a stray or mistyped label? fix it, or leave the rows out)")
    return line + (f"; listed in {where}" if where is not None and (report["bad_count"] or report["ignored"]) else "")


def enforce(report: dict[str, Any], cfg: Any, where: Path | None) -> None:
    """Refuse a checked data set (DataError): a bad sample under ``fail``, more bad than
    ``data.max_bad_fraction``, or fewer than two classes. ``cfg``: the config or its data section."""
    data: DataConfig = getattr(cfg, "data", cfg)
    listed = f"; every one is listed in {where}" if where is not None else ""
    if report["bad"] and data.on_bad_input == "fail":
        raise DataError(first_bad_message(report["bad"][0]))
    if report["bad_fraction"] > data.max_bad_fraction:
        raise DataError(f"{report['bad_count']} of {report['checked']} samples are bad "
                        f"({100 * report['bad_fraction']:.1f} %, more than data.max_bad_fraction="
                        f"{data.max_bad_fraction}){listed}. Fix them, or raise data.max_bad_fraction")
    train_classes = report["splits"]["train"]["classes"]
    if len(report["classes"]) < 2 or not train_classes:
        raise DataError(f"data.path: needs accepted samples of at least 2 classes (found {dict(report['classes'])}){listed}")
