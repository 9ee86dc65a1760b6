"""What a run directory holds, read defensively: a pipeline, a sweep alone, or a training run alone
(a missing or half-written file leaves its part out rather than failing the report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raylm.records import PipelineRecord, RunSummary, SweepResults, parse_record
from raylm.run_files import newest_checkpoint_meta, read_json  # shared with the console's epoch bar
from raylm.storage import stored

PIPELINE_RECORD = "pipeline.json"
SWEEP_CONFIG = "tune/raylm_sweep.json"
SWEEP_RESULTS = "tune/trials.json"
PREVIEW_PNG = "augment_preview.png"
PREVIEW_TXT = "augment_preview.txt"


def _tune_history(trial_dir: str | None) -> list[dict[str, Any]]:
    """A trial's epoch reports from Tune's ``result.json`` (its last line is the compressed measurement)."""
    if not trial_dir:
        return []
    try:
        lines = (Path(trial_dir) / "result.json").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict) and "epoch" in result and "val_accuracy" in result and not result.get("compressed"):
            out.append(result)
    return out


def trial_histories(run_dir: Path, trials: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per trial id, its epochs: Tune's result.json, else the trial's newest checkpoint's history."""
    out = {}
    for row in trials:
        trial_id = row.get("trial_id")
        history = _tune_history(row.get("trial_dir"))
        if not history:
            meta = newest_checkpoint_meta(run_dir / "tune" / "trials" / str(trial_id) / "train")
            history = (meta or {}).get("history") or []
        if history:
            out[str(trial_id)] = history
    return out


def served_artifact(run_dir: Path, stages: dict[str, Any], sweep: dict[str, Any] | None) -> Path | None:
    """The artifact the pipeline compressed (and served), else what a sweep exported or its best trial's."""
    for stage in ("serve", "evaluate", "compress"):
        path = (stages.get(stage) or {}).get("artifact")
        if path and (Path(path) / "artifact.json").is_file():
            return Path(path)
    exported = run_dir / "compress" / "tune-best"
    if (exported / "artifact.json").is_file():
        return exported
    if sweep:
        best = next((r for r in sweep.get("trials") or [] if r.get("trial_id") == sweep.get("best")), None)
        if best and best.get("artifact") and (Path(best["artifact"]) / "artifact.json").is_file():
            return Path(best["artifact"])
    return None


def pipeline_record(run_dir: Path) -> PipelineRecord:
    """``pipeline.json``, validated; an empty record where the file is missing or half-written. A record
    a newer raylm wrote, or one with a mistyped field, is refused (``RecordError`` names file and field)."""
    data = read_json(run_dir / PIPELINE_RECORD)
    return PipelineRecord() if data is None else parse_record(PipelineRecord, data, str(run_dir / PIPELINE_RECORD))


def sweep_results(run_dir: Path) -> SweepResults | None:
    """``tune/trials.json``, validated as :func:`pipeline_record`; None where there is none."""
    data = read_json(run_dir / SWEEP_RESULTS)
    return None if data is None else parse_record(SweepResults, data, str(run_dir / SWEEP_RESULTS))


def read_run(run_dir: Path) -> dict[str, Any]:
    """Everything the report shows, each part None/empty where the run does not have it (the stage
    records and the sweep validated, then as their files hold them)."""
    run_dir = Path(run_dir).expanduser().resolve()
    record = pipeline_record(run_dir).to_json()
    stages = record.get("stages") or {}
    results = sweep_results(run_dir)
    sweep = results.to_json() if results is not None else None
    trials = (sweep or {}).get("trials") or []
    artifact_dir = served_artifact(run_dir, stages, sweep)
    artifact = read_json(artifact_dir / "artifact.json") if artifact_dir else None
    return {
        # Where the run is stored (a URI run is read from its local scratch; the page names the URI).
        "run_dir": run_dir if stored(run_dir).is_local else stored(run_dir), "name": run_dir.name, "stages": stages, "config": record.get("config"),
        "sweep": sweep, "trials": trials, "histories": trial_histories(run_dir, trials),
        "retrain": newest_checkpoint_meta(run_dir / "train"), "artifact_dir": artifact_dir, "artifact": artifact,
        "session": read_json(run_dir / "logs" / "ray_session.json"),
        "status": read_json(run_dir / "logs" / "status.json"),  # how the run's command ended (raylm.report.runs)
        "schedule": read_json(run_dir / "tune" / "schedule.json"),  # a PBT sweep's learned schedule (docs/pbt.md)
        "preview_png": run_dir / PREVIEW_PNG if (run_dir / PREVIEW_PNG).is_file() else None,
        "preview_text": (run_dir / PREVIEW_TXT).read_text() if (run_dir / PREVIEW_TXT).is_file() else None,
    }


def kind_of(run_dir: Path) -> str | None:
    if (run_dir / PIPELINE_RECORD).is_file():
        return "pipeline"
    if (run_dir / SWEEP_CONFIG).is_file():
        return "sweep"
    if stored(run_dir / "train").is_dir():  # a URI run's train/ is only in its storage
        return "train"
    status = read_json(run_dir / "logs" / "status.json")  # a run that failed before writing anything
    return status.get("command") if isinstance(status, dict) else None


def summarize(run_dir: Path) -> RunSummary | None:
    """One ``raylm runs`` row: kind, the last stage reached, the best accuracy, the served URL."""
    kind = kind_of(run_dir)
    if kind is None:
        return None
    stages = pipeline_record(run_dir).stages
    sweep = sweep_results(run_dir)
    meta = newest_checkpoint_meta(run_dir / "train")
    stage = stages.names()[-1] if stages.names() else None
    if stage is None:
        stage = "train" if meta else "tune" if kind != "train" else "-"
    if stage == "train" and meta:
        total = (meta.get("config") or {}).get("train", {}).get("epochs")
        stage = f"train({meta['epoch']}/{total})" if total else "train"
    # Every epoch's: the newest checkpoint's history holds them all (its own epoch need not be the best).
    history = [h.get("val_accuracy") for h in (meta or {}).get("history") or [] if isinstance(h, dict)]
    accuracies = [stages.evaluate and stages.evaluate.accuracy, stages.compress and stages.compress.accuracy,
                  ((meta or {}).get("metrics") or {}).get("val_accuracy"), *history]
    # A trial's compressed accuracy and its dense checkpoint's (val_accuracy): a sweep's best may be a dense row.
    accuracies += [a for r in (sweep.trials if sweep else []) if r.status == "completed" for a in (r.accuracy, r.val_accuracy)]
    found = [a for a in accuracies if isinstance(a, (int, float))]
    return RunSummary(name=run_dir.name, path=str(run_dir), kind=kind, stage=stage,
                      best_accuracy=float(max(found)) if found else None,
                      served_accuracy=stages.evaluate.accuracy if stages.evaluate else None,
                      url=stages.serve.url if stages.serve else None, modified=_modified(run_dir),
                      shadow=_live_serving(Path(run_dir) / "serve"))


def _live_serving(summary_dir: Path) -> str | None:
    """The canary's share and the shadow's agreement that serving replicas wrote (raylm/serve/shadow.py)."""
    if not summary_dir.is_dir():  # imported only then: raylm.serve brings Ray Serve and FastAPI with it
        return None
    from raylm.serve.shadow import read_shadow_summary, shadow_line

    return shadow_line(read_shadow_summary(summary_dir))


def _modified(run_dir: Path) -> float:
    """When the run last did something: its records and stage folders, not the run folder itself, whose
    time moves when `raylm report` writes report.html there (that reordered `raylm runs`)."""
    paths = [run_dir / PIPELINE_RECORD, run_dir / "logs" / "status.json", run_dir / SWEEP_RESULTS,
             run_dir / "train", run_dir / "tune", run_dir / "compress"]
    return max((p.stat().st_mtime for p in paths if p.exists()), default=run_dir.stat().st_mtime)
