"""``run_pipeline(cfg)``: tune -> retrain the chosen point -> compress -> evaluate -> serve -> smoke request.

Every stage writes below one run directory and records what it produced in
``<run_dir>/pipeline.json``; ``start="compress"`` re-enters there, reading the earlier stages'
outputs from that record instead of redoing them.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

from raylm.config import ConfigError, RaylmConfig, validate_config
from raylm.errors import RaylmError

STAGES = ("tune", "train", "compress", "evaluate", "serve")
RECORD = "pipeline.json"


class PipelineError(RaylmError, RuntimeError):
    """A stage cannot run (its inputs are missing) or its result failed a check."""


def _read_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RECORD
    return json.loads(path.read_text()) if path.is_file() else {"stages": {}}


def _committed_record(cfg: RaylmConfig) -> dict[str, Any]:
    """The run's record as storage holds it (committed), before any workspace is opened."""
    location = cfg.run_location
    if location.is_local:
        return _read_record(location.local_path)
    from raylm.storage import committed

    listed = committed(location) or {}
    return location.join(RECORD).read_json() if RECORD in listed else {"stages": {}}


def _write_record(run_dir: Path, record: dict[str, Any]) -> None:
    from raylm.atomic import atomic_write_text

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RECORD, json.dumps(record, indent=2, default=str))


def choose(front: list[dict[str, Any]], best: dict[str, Any] | None, within: float,
           max_accuracy_drop: float) -> list[dict[str, Any]]:
    """The sweep's candidates in the order the pipeline tries them, the chosen one first.

    Only front members within ``max_accuracy_drop`` points of their own trial's dense model
    qualify; with ``within > 0`` the fastest of those within ``within`` of the top accuracy leads,
    else the best by ``tune.objectives``. The rest follow, most accurate first.
    """
    if best is None:
        raise PipelineError("tune: no trial completed, nothing to retrain (see <run>/tune/trials.csv for errors)")
    pool = [r for r in front if (r.get("accuracy_drop_pts") or 0.0) <= max_accuracy_drop] or [best]
    top = max(r["accuracy"] for r in pool)
    if within > 0:
        lead = min((r for r in pool if r["accuracy"] >= top - within), key=lambda r: (r["latency_ms"], -r["accuracy"]))
    else:
        lead = best if best in pool else max(pool, key=lambda r: (r["accuracy"], -r["latency_ms"]))
    rest = sorted((r for r in pool if r is not lead), key=lambda r: (-r["accuracy"], r["latency_ms"]))
    # Compressed members over budget in the sweep are still worth a try after those: a trial prunes
    # one-shot, the retrain trains around the mask, and the guard judges the result anyway.
    over = sorted((r for r in front if r not in pool and r.get("kind") == "compressed"), key=lambda r: -r["accuracy"])
    return [lead] + rest + over


def _chosen_config(cfg: RaylmConfig, params: dict[str, Any]) -> RaylmConfig:
    """The sweep's config with the chosen trial's values, at the pipeline's full training budget."""
    from raylm.tune.space import trial_config

    pc = cfg.pipeline
    chosen = trial_config(cfg.to_dict(), params, storage_path=cfg.train.storage_path, name=str(cfg.train.name))
    return chosen.override({"train.epochs": pc.retrain_epochs or cfg.train.epochs,
                            "train.num_workers": pc.retrain_workers or cfg.train.num_workers})


def _smoke_sample(cfg: RaylmConfig) -> tuple[dict[str, Any], str] | None:
    """One item as an HTTP body, and its label: from a class folder a validation file, from a table its
    first row; None where the source cannot be read here (remote)."""
    from raylm.data import resolve_source
    from raylm.data.files import detect_format, label_of_path, list_class_folder, split_files
    from raylm.data.modality import modality_record

    record = modality_record(cfg.task.modality)
    source, _ = resolve_source(cfg)
    if "://" in source:
        return None
    fmt = detect_format(source, cfg.data.format)
    if fmt == "folder":
        _, files = list_class_folder(source, record.extensions)  # the ones training reads
        _, val = split_files(files, source, cfg.data.validation_fraction)
        path = (val or files)[0]
        return {record.name: record.to_request(Path(path).read_bytes())}, label_of_path(path)
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    from raylm.data.check import table_files

    read = {"csv": pyarrow.csv.read_csv, "jsonl": pyarrow.json.read_json, "parquet": pyarrow.parquet.read_table}[fmt]
    row = read(table_files(source, fmt)[0]).slice(0, 1).to_pylist()[0]
    return {record.name: record.to_request(row[record.value_column(cfg)])}, str(row[cfg.data.label_column])


def _stage_tune(cfg: RaylmConfig, record: dict[str, Any]) -> dict[str, Any]:
    from raylm.tune import sweep
    from raylm.tune.sweep import SWEEP_CONFIG

    tune_dir = cfg.run_dir / "tune"
    # A pipeline rerun after a crash continues its sweep rather than refusing or starting over.
    result = sweep(resume=tune_dir) if (tune_dir / SWEEP_CONFIG).is_file() else sweep(cfg)
    ranked = choose(result.front, result.best, cfg.pipeline.choose_within, cfg.pipeline.max_accuracy_drop)
    row = ranked[0]
    return {"tune_dir": str(result.tune_dir), "trials": len(result.rows),
            "completed": sum(r["status"] == "completed" for r in result.rows),
            "pareto_front": [r["trial_id"] for r in result.front], "chosen": row["trial_id"], "params": row["params"],
            "alternates": [{"trial_id": r["trial_id"], "params": r["params"]} for r in ranked[1:]],
            "sweep_measurement": {k: row.get(k) for k in ("val_accuracy", "accuracy", "latency_ms", "size_mb",
                                                          "dense_accuracy", "accuracy_drop_pts", "gain_reason")}}


def _stage_train(cfg: RaylmConfig, record: dict[str, Any]) -> dict[str, Any]:
    """The chosen point's hyperparameters at full budget, dense: the reference every compressed
    candidate is judged against. Pruning recipes then train around their mask in ``compress``."""
    from raylm.train import fit

    params = record["stages"]["tune"]["params"]
    outcome = fit(_chosen_config(cfg, params))
    return {"checkpoint": str(outcome.best_checkpoint), "metrics": {k: outcome.metrics.get(k) for k in
                                                                     ("epoch", "val_accuracy", "val_loss", "train_loss")}}


def _recipes(cfg: RaylmConfig, record: dict[str, Any]) -> list[tuple[str, RaylmConfig]]:
    """The compression attempts in order: the chosen recipe, its recovery fine-tune, the other front
    members' recipes, the dense model."""
    from raylm.compress.pipeline import prunes
    from raylm.tune.results import DENSE_RECIPE

    pc = cfg.pipeline
    tune = record["stages"]["tune"]
    out: list[tuple[str, RaylmConfig]] = []
    for label, params in [(f"chosen {tune['chosen']}", tune["params"])] + [
            (f"front {a['trial_id']}", a["params"]) for a in tune.get("alternates", [])]:
        if _is_dense(_chosen_config(cfg, params)):
            continue  # the dense model is the last resort, tried once at the end
        tree = _chosen_config(cfg, params).to_dict()
        pruned = prunes(validate_config(tree).compress)
        if pruned and not tree["compress"]["finetune_epochs"]:
            tree["compress"]["finetune_epochs"] = pc.prune_epochs  # train around the mask, not one-shot
        out.append((label, validate_config(tree)))
        if pruned and pc.recovery_epochs and label.startswith("chosen"):
            tree = json.loads(json.dumps(tree))
            tree["compress"]["finetune_epochs"] += pc.recovery_epochs
            out.append((f"recovery fine-tune (+{pc.recovery_epochs} ep)", validate_config(tree)))
    dense = _chosen_config(cfg, tune["params"] | DENSE_RECIPE)
    out.append(("dense", dense))
    seen, unique = set(), []
    for label, c in out:  # front members can share a recipe: try each once
        key = json.dumps(c.compress.model_dump(mode="json"), sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append((label, c))
    return unique


def _is_dense(c: RaylmConfig) -> bool:
    from raylm.compress.pipeline import prunes

    return not prunes(c.compress) and c.compress.quantize.mode == "none"


def _stage_compress(cfg: RaylmConfig, record: dict[str, Any]) -> dict[str, Any]:
    """Compress the retrained model; serve only what gains and keeps within the accuracy guard.

    Each attempt is measured against the dense retrained model (fp32 ONNX Runtime, whole
    validation split, from the exported file). The first attempt that passes is copied to the
    stable ``<run>/compress/pipeline`` that serving configs point at; every attempt is recorded.
    """
    import shutil

    from raylm.atomic import atomic_directory
    from raylm.compress import variant_name
    from raylm.compress.objectives import compress_and_measure

    from raylm.storage import localize

    pc = cfg.pipeline
    checkpoint = localize(record["stages"]["train"]["checkpoint"], cfg.train.storage_options, require_commit=False)
    attempts, served = [], None
    for label, candidate in _recipes(cfg, record):
        out = compress_and_measure(candidate, checkpoint) | {"recipe": variant_name(candidate), "tried_as": label}
        dense = _is_dense(candidate)
        within = out["accuracy_drop_pts"] <= pc.max_accuracy_drop
        if dense:
            verdict, why = True, "the dense model: nothing compressed passed"
        elif within and out["gain"]:
            verdict, why = True, f"{out['gain_reason']}, {out['accuracy_drop_pts']:+.2f} pts"
        elif not within:
            verdict, why = False, (f"accuracy drop {out['accuracy_drop_pts']:.2f} pts exceeds "
                                   f"pipeline.max_accuracy_drop={pc.max_accuracy_drop}")
        else:
            verdict, why = False, out["gain_reason"]
        if not verdict and pc.serve_over_budget and not attempts:
            verdict, why = True, f"served over budget (pipeline.serve_over_budget=true): {why}"
        attempts.append({"tried_as": label, "recipe": out["recipe"], "passed": verdict, "why": why,
                         **{k: out[k] for k in ("accuracy", "size_mb", "latency_ms", "accuracy_drop_pts", "size_ratio",
                                                "latency_ratio", "artifact")}})
        if verdict:
            served = out
            break
    assert served is not None  # the dense attempt always passes
    stable = cfg.run_dir / "compress" / (cfg.compress.variant or "pipeline")
    # A stable name: a RayService or `raylm serve` config points at <run>/compress/pipeline.
    with atomic_directory(stable) as tmp:
        shutil.copytree(served["artifact"], tmp, dirs_exist_ok=True)
    dense = {"accuracy": served["dense_accuracy"], "size_mb": served["dense_size_mb"],
             "latency_ms": served["dense_latency_ms"], "runtime": served["dense_runtime"]}
    return served | {"artifact": str(stable), "source_artifact": served["artifact"], "dense": dense,
                     "attempts": attempts}


def _stage_evaluate(cfg: RaylmConfig, record: dict[str, Any]) -> dict[str, Any]:
    """The artifact reloaded from disk, as serving loads it, on the whole validation split."""
    import numpy as np

    from raylm.compress import load_artifact
    from raylm.compress.measure import collect
    from raylm.data import MODEL_INPUTS, build_datasets

    from raylm.storage import localize

    artifact_dir = localize(record["stages"]["compress"]["artifact"], cfg.train.storage_options)
    artifact = load_artifact(artifact_dir)
    chosen = _chosen_config(cfg, record["stages"]["tune"]["params"])
    data = build_datasets(chosen)
    inputs = MODEL_INPUTS[cfg.task.modality]
    val = collect(data.validation, inputs + ("label",))
    preds = np.concatenate([artifact.predict({n: val[n][i:i + 256] for n in inputs}).argmax(-1)
                            for i in range(0, len(val["label"]), 256)])
    labels = artifact.meta.get("labels") or artifact.meta["task"]["labels"]
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(confusion, (val["label"], preds), 1)
    size = sum(f.stat().st_size for f in artifact_dir.iterdir() if f.name.startswith("model."))
    compressed = record["stages"]["compress"]
    accuracy = float((preds == val["label"]).mean())
    drop = round((compressed["dense"]["accuracy"] - accuracy) * 100, 3)
    if drop > cfg.pipeline.max_accuracy_drop and not cfg.pipeline.serve_over_budget:
        raise PipelineError(f"evaluate: {record['stages']['compress']['artifact']} scores {accuracy:.4f}, {drop:.2f} points under the dense "
                            f"model (pipeline.max_accuracy_drop={cfg.pipeline.max_accuracy_drop}): not served")
    return {"artifact": record["stages"]["compress"]["artifact"], "accuracy": accuracy, "accuracy_drop_pts": drop,
            "samples": int(len(val["label"])), "size_mb": size / 1e6,
            "latency_ms": compressed["latency_ms"], "labels": labels, "confusion": confusion.tolist()}


def _stage_serve(cfg: RaylmConfig, record: dict[str, Any]) -> dict[str, Any]:
    """Deploy the artifact on Serve and send one real request to it."""
    import requests
    from ray import serve

    from raylm.serve import build_app

    sc = cfg.serve
    compressed = record["stages"]["compress"]
    app = build_app([f"{compressed['recipe']}={compressed['artifact']}"], sc)
    serve.start(http_options=sc.http_options())
    serve.run(app, name="raylm", route_prefix="/", blocking=False)
    host = "127.0.0.1" if sc.host in ("0.0.0.0", "::") else sc.host
    url = f"http://{host}:{sc.port}/predict"
    out: dict[str, Any] = {"url": url, "app": "raylm"}
    sample = _smoke_sample(cfg)
    if sample is None:
        out["smoke"] = "skipped: the data source holds no raw items to send"
        return out
    body, expected = sample
    headers = {sc.api_key_header: os.environ[sc.api_key_env]} if sc.api_key_env else {}
    started = time.perf_counter()
    response = requests.post(url, json=body, headers=headers, timeout=60)
    if response.status_code != 200:
        raise PipelineError(f"serve: the smoke request to {url} answered {response.status_code}: {response.text[:300]}")
    predicted = response.json()["predictions"][0]["label"]
    out["smoke"] = {"status": 200, "expected": expected, "predicted": predicted, "correct": predicted == expected,
                    "latency_ms": round((time.perf_counter() - started) * 1e3, 1)}
    return out


_RUNNERS = {"tune": _stage_tune, "train": _stage_train, "compress": _stage_compress,
            "evaluate": _stage_evaluate, "serve": _stage_serve}


def reentry_stage(cfg: RaylmConfig, record: dict[str, Any], stop: str) -> str:
    """Where a rerun of the same command continues: after the stages the record holds for this very
    config (a run killed in ``compress`` keeps its sweep and its retrain), else from the start."""
    if not _same_run_config(record.get("config"), cfg.to_dict()):
        return STAGES[0]
    for stage in STAGES[:STAGES.index(stop) + 1]:
        if stage not in record["stages"]:
            return stage
    return stop  # a finished run: its last stage again (e.g. serve the recorded artifact once more)


def _same_run_config(recorded: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """Whether a recorded config is this one, apart from where the run is tracked (switching MLflow
    on for a rerun continues the run, it does not redo it)."""
    if not isinstance(recorded, dict):
        return False
    return {k: v for k, v in recorded.items() if k != "tracking"} == {k: v for k, v in current.items() if k != "tracking"}


def run_pipeline(cfg: RaylmConfig, *, start: str | None = None, stop: str = "serve", verbose: bool = True) -> dict[str, Any]:
    """Run stages ``start``..``stop``; earlier stages' outputs come from ``<run_dir>/pipeline.json``.
    ``start=None``: re-enter where an earlier run of the same config stopped (:func:`reentry_stage`)."""
    from raylm.storage import run_workspace

    if start is None:
        start = reentry_stage(cfg, _committed_record(cfg), stop) if stop in STAGES else STAGES[0]
    if start not in STAGES or stop not in STAGES or STAGES.index(start) > STAGES.index(stop):
        raise ConfigError(f"--from {start} --to {stop}: stages run in the order {' -> '.join(STAGES)}")
    record = _committed_record(cfg)
    for earlier in STAGES[:STAGES.index(start)]:
        if earlier not in record["stages"]:
            raise ConfigError(f"--from {start}: {cfg.run_location.join(RECORD)} has no '{earlier}' stage; run from "
                              f"{earlier} (or pass the run's train.name)")
    if start == "tune":
        from raylm.tune import check_space

        check_space(cfg)
    # With URI storage the stages write into a local scratch of the run, committed to storage after
    # every stage and deleted at the end (raylm/storage/workspace.py); local storage: the run directory.
    # Tracking on: one MLflow run for the whole pipeline; its sweep's trials are its children and its
    # retrain logs its epochs into it (raylm/tracking/).
    from raylm.tracking import tracked_run

    with run_workspace(cfg.run_location) as run_dir, tracked_run(cfg, "pipeline") as tracked:
        return _run_stages(cfg, record, run_dir, start, stop, verbose, tracked)


def _run_stages(cfg: RaylmConfig, record: dict[str, Any], run_dir: Path, start: str, stop: str,
                verbose: bool, tracked=None) -> dict[str, Any]:
    from raylm.capacity import check_run_paths
    from raylm.console import pipeline_stage
    from raylm.runtime import ensure_ray, quiet_data_progress
    from raylm.storage import public_paths, publish_workspace
    from raylm.tracking import track_stage
    from raylm.tune.results import sweep_table

    record["config"] = cfg.to_dict()
    ensure_ray(ingress=cfg.serve.ingress)
    check_run_paths(cfg)  # node-local paths on a multi-node cluster: refused before the sweep, not at retrain
    quiet_data_progress()
    table = partial(sweep_table, run_dir / "tune")  # read when the sweep stage ends, not before
    for stage in STAGES[STAGES.index(start):STAGES.index(stop) + 1]:
        began = time.perf_counter()
        with pipeline_stage(stage, cfg, record, table=table) if verbose else nullcontext(lambda result: None) as shown:
            result = _RUNNERS[stage](cfg, record)
            shown(result)
        result["seconds"] = round(time.perf_counter() - began, 1)
        record["stages"][stage] = public_paths(result)  # URIs, not this process's scratch, with URI storage
        for later in STAGES[STAGES.index(stage) + 1:]:
            record["stages"].pop(later, None)  # made from the old output: stale now
        _write_record(run_dir, record)
        track_stage(cfg, tracked, stage, record["stages"], run_dir)  # MLflow, when on: figures; registry after evaluate
        publish_workspace(cfg.run_location)  # the stage's files, then its record, committed
    record["run_dir"] = cfg.run_location.uri
    return record


def format_summary(record: dict[str, Any]) -> str:
    """The final table: what the sweep predicted for the chosen point, and what the pipeline got."""
    st = record["stages"]
    lines = []
    if "tune" in st:
        t = st["tune"]
        lines.append(f"sweep     {t['completed']}/{t['trials']} trials completed, Pareto front {len(t['pareto_front'])}, "
                     f"chosen {t['chosen']}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                           for k, v in t["params"].items()))
    rows = [("stage", "accuracy", "MB", "p50 ms", "vs dense", "seconds")]
    if "tune" in st:
        m = st["tune"]["sweep_measurement"]
        rows.append(("sweep trial", f"{m['accuracy']:.3f}", f"{m['size_mb']:.3f}", f"{m['latency_ms']:.2f}", "-",
                     str(st["tune"]["seconds"])))
    if "train" in st:
        rows.append((f"retrain ({st['train']['metrics']['epoch']} ep, dense)", f"{st['train']['metrics']['val_accuracy']:.3f}",
                     "-", "-", "-", str(st["train"]["seconds"])))
    if "compress" in st:
        c = st["compress"]
        d = c.get("dense")
        if d:  # the reference every compressed row is judged against
            rows.append((f"dense {d.get('runtime', 'onnx-fp32')}", f"{d['accuracy']:.3f}", f"{d['size_mb']:.3f}", f"{d['latency_ms']:.2f}",
                         "1.00x 1.00x", "-"))
        for a in c.get("attempts", [])[:-1]:
            rows.append((f"  tried {a['recipe']}", f"{a['accuracy']:.3f}", f"{a['size_mb']:.3f}",
                         f"{a['latency_ms']:.2f}", f"rejected: {a['why']}", "-"))
        versus = (f"{-c['accuracy_drop_pts']:+.1f}pt {c['size_ratio']:.2f}x {c['latency_ratio']:.2f}x"
                  if "size_ratio" in c else "-")
        rows.append((f"compress {c['recipe']}", f"{c['accuracy']:.3f}", f"{c['size_mb']:.3f}", f"{c['latency_ms']:.2f}",
                     versus, str(c["seconds"])))
    if "evaluate" in st:
        e = st["evaluate"]
        rows.append((f"evaluate ({e['samples']} val)", f"{e['accuracy']:.3f}", f"{e['size_mb']:.3f}",
                     f"{e['latency_ms']:.2f}", f"{-e.get('accuracy_drop_pts', 0):+.1f}pt" if "accuracy_drop_pts" in e else "-",
                     str(e["seconds"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if "serve" in st:
        s = st["serve"]
        smoke = s["smoke"]
        if isinstance(smoke, dict):
            smoke = f"{smoke['status']}, predicted {smoke['predicted']!r} (expected {smoke['expected']!r}) in {smoke['latency_ms']} ms"
        lines.append(f"serving   {s['url']}   smoke request: {smoke}")
    lines.append(f"run dir   {record['run_dir']}")
    return "\n".join(lines)
