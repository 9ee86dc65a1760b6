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
from typing import TYPE_CHECKING, Any

from raylm.config import ConfigError, PipelineConfig, RaylmConfig, validate_config
from raylm.console import format_summary  # noqa: F401  (the final table; raylm.pipeline.format_summary as before)
from raylm.errors import RaylmError
from raylm.records import Objectives, PipelineRecord, RecordError, parse_record, read_record
from raylm.records.base import ParamValue
from raylm.records.pipeline import (STAGE_RECORDS, Alternate, CompressAttempt, CompressStage, DenseReference,
                                    EvaluateStage, ServeStage, SmokeRequest, SweepMeasurement, TrainMetrics,
                                    TrainStage, TuneStage)

if TYPE_CHECKING:
    from raylm.data.sources import DataSource

STAGES = ("tune", "train", "compress", "evaluate", "serve")
RECORD = "pipeline.json"


class PipelineError(RaylmError, RuntimeError):
    """A stage cannot run (its inputs are missing) or its result failed a check."""


def _read_record(run_dir: Path) -> PipelineRecord:
    """The record, validated (``PipelineRecord``); one written by an older raylm loads, a newer one or a
    mistyped field is refused naming the file and the field."""
    path = run_dir / RECORD
    return _refused_as_config(lambda: read_record(PipelineRecord, path)) if path.is_file() else PipelineRecord()


def _refused_as_config(read):
    try:
        return read()
    except RecordError as err:  # before Ray starts, as a config error: the run's own file is the input
        raise ConfigError(str(err)) from None


def _committed_record(cfg: RaylmConfig) -> PipelineRecord:
    """The run's record as storage holds it (committed), before any workspace is opened."""
    location = cfg.run_location
    if location.is_local:
        return _read_record(location.local_path)
    from raylm.storage import committed

    listed = committed(location) or {}
    if RECORD not in listed:
        return PipelineRecord()
    source = location.join(RECORD)
    return _refused_as_config(lambda: parse_record(PipelineRecord, source.read_json(), str(source)))


def _write_record(run_dir: Path, record: PipelineRecord) -> None:
    from raylm.atomic import atomic_write_text

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RECORD, json.dumps(record.to_json(), indent=2, default=str))


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


def _chosen_config(cfg: RaylmConfig, params: dict[str, ParamValue]) -> RaylmConfig:
    """The sweep's config with the chosen trial's values, at the pipeline's full training budget."""
    from raylm.tune.space import trial_config

    pipeline = cfg.pipeline
    chosen = trial_config(cfg.to_dict(), params, storage_path=cfg.train.storage_path, name=str(cfg.train.name))
    changes = {"train.epochs": pipeline.retrain_epochs or cfg.train.epochs,
               "train.num_workers": pipeline.retrain_workers or cfg.train.num_workers}
    learned = cfg.run_dir / "tune" / "schedule.json"
    if cfg.tune.scheduler in ("pbt", "pb2") and learned.is_file() and not cfg.augment.schedule:
        # PBA: the retrain replays the population's learned schedule, stretched to its epochs (docs/pbt.md).
        changes["augment.schedule"] = str(learned)
    return chosen.override(changes)


def _smoke_sample(cfg: RaylmConfig, source: DataSource | None = None) -> tuple[dict[str, Any], str] | None:
    """One item as an HTTP body, and its label: from a class folder a validation file, from a table its
    first row; None where the source cannot be read here (remote). ``source``: the run's resolved data."""
    from raylm.data import data_source
    from raylm.data.files import label_of_path
    from raylm.data.modality import modality_record

    record = modality_record(cfg.task.modality)
    source = source or data_source(cfg)
    if source.uri:
        return None
    files = source.roots["train"].files  # the ones training reads
    if source.format == "folder":
        path = (source.validation_files or files)[0]
        return {record.name: record.to_request(Path(path).read_bytes())}, label_of_path(path)
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    read = {"csv": pyarrow.csv.read_csv, "jsonl": pyarrow.json.read_json, "parquet": pyarrow.parquet.read_table}[source.format]
    table = read(files[0])
    column = record.value_column(cfg)
    for row in table.slice(0, 1000).select([column, cfg.data.label_column]).to_pylist():
        value, label = row[column], _as_text(row[cfg.data.label_column])
        if cfg.task.modality == "text":
            # One non-UTF-8 byte anywhere makes pyarrow read a CSV's whole text column as binary (the data
            # check skips that row, training reads the others): the request carries the text, as str.
            value = _as_text(value)
            if value is not None and not value.strip():
                value = None
        if value and label:  # the first row the data check would accept: not empty, labelled, decodable
            return {record.name: record.to_request(value)}, label
    return None


def _as_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None if value is None else str(value)


def _stage_tune(cfg: RaylmConfig, record: PipelineRecord) -> TuneStage:
    from raylm.tune import sweep
    from raylm.tune.sweep import SWEEP_CONFIG

    tune_dir = cfg.run_dir / "tune"
    # A pipeline rerun after a crash continues its sweep rather than refusing or starting over.
    result = sweep(resume=tune_dir) if (tune_dir / SWEEP_CONFIG).is_file() else sweep(cfg)
    ranked = choose(result.front, result.best, cfg.pipeline.choose_within, cfg.pipeline.max_accuracy_drop)
    row = ranked[0]
    return TuneStage(tune_dir=str(result.tune_dir), trials=len(result.rows),
                     completed=sum(r["status"] == "completed" for r in result.rows),
                     pareto_front=[r["trial_id"] for r in result.front], chosen=row["trial_id"], params=row["params"],
                     alternates=[Alternate(trial_id=r["trial_id"], params=r["params"]) for r in ranked[1:]],
                     sweep_measurement=SweepMeasurement(**{k: row.get(k) for k in SweepMeasurement.model_fields}))


def _stage_train(cfg: RaylmConfig, record: PipelineRecord) -> TrainStage:
    """The chosen point's hyperparameters at full budget, dense: the reference every compressed
    candidate is judged against. Pruning recipes then train around their mask in ``compress``."""
    from raylm.train import fit

    outcome = fit(_chosen_config(cfg, record.stages.tune.params))
    best = _checkpoint_metrics(str(outcome.best_checkpoint), cfg)
    return TrainStage(checkpoint=str(outcome.best_checkpoint),
                      metrics=TrainMetrics(**{k: outcome.metrics.get(k) for k in TrainMetrics.model_fields}),
                      best=TrainMetrics(**{k: best.get(k) for k in TrainMetrics.model_fields}) if best else None)


def _checkpoint_metrics(checkpoint: str, cfg: RaylmConfig) -> dict | None:
    """The epoch metrics a checkpoint was saved with (its raylm.json), None when unreadable."""
    from raylm.storage import StoragePath, is_uri
    from raylm.train.checkpoint import CheckpointError, read_stored_meta

    try:
        meta = read_stored_meta(StoragePath.of(checkpoint, cfg.train.storage_options if is_uri(checkpoint) else None))
    except (CheckpointError, OSError):
        return None
    return (meta.get("metrics") or {}) | {"epoch": meta.get("epoch")}


def _recipes(cfg: RaylmConfig, record: PipelineRecord) -> list[tuple[str, RaylmConfig]]:
    """The compression attempts in order: the chosen recipe, its recovery fine-tune, the other front
    members' recipes, each quantizer they used alone on the dense model (no pruning, no distilling),
    the dense model.

    The quantize-only rung is the lightest compression left when pruning costs more than the guard
    allows: on the image demo's main job every pruned recipe lost 1.1-1.4 points (5 of 366 samples)
    while static-selective int8 alone kept the dense accuracy at 0.27x the size."""
    from raylm.compress.pipeline import prunes
    from raylm.tune.results import DENSE_RECIPE

    pipeline = cfg.pipeline
    tune = record.stages.tune
    out: list[tuple[str, RaylmConfig]] = []
    for label, params in [(f"chosen {tune.chosen}", tune.params)] + [
            (f"front {a.trial_id}", a.params) for a in tune.alternates]:
        if _is_dense(_chosen_config(cfg, params)):
            continue  # the dense model is the last resort, tried once at the end
        tree = _chosen_config(cfg, params).to_dict()
        pruned = prunes(validate_config(tree).compress)
        if pruned and not tree["compress"]["finetune_epochs"]:
            tree["compress"]["finetune_epochs"] = pipeline.prune_epochs  # train around the mask, not one-shot
        out.append((label, validate_config(tree)))
        if pruned and pipeline.recovery_epochs and label.startswith("chosen"):
            tree = json.loads(json.dumps(tree))
            tree["compress"]["finetune_epochs"] += pipeline.recovery_epochs
            out.append((f"recovery fine-tune (+{pipeline.recovery_epochs} ep)", validate_config(tree)))
    quantizers = [candidate.compress.quantize.mode for _, candidate in out]
    for mode in dict.fromkeys(q for q in quantizers if q != "none"):  # in the order first tried
        out.append((f"{mode} alone (dense, not pruned)",
                    _chosen_config(cfg, tune.params | DENSE_RECIPE | {"compress.quantize.mode": mode})))
    dense = _chosen_config(cfg, tune.params | DENSE_RECIPE)
    out.append(("dense", dense))
    seen, unique = set(), []
    for label, candidate in out:  # front members can share a recipe: try each once
        key = json.dumps(candidate.compress.model_dump(mode="json"), sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append((label, candidate))
    return unique


def _is_dense(config: RaylmConfig) -> bool:
    from raylm.compress.methods import compresses

    return not compresses(config.compress, config.model.backend)


def _stage_compress(cfg: RaylmConfig, record: PipelineRecord) -> CompressStage:
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

    checkpoint = localize(record.stages.train.checkpoint, cfg.train.storage_options, require_commit=False)
    attempts: list[CompressAttempt] = []
    served: tuple[Objectives, str, str] | None = None
    for label, candidate in _recipes(cfg, record):
        out = compress_and_measure(candidate, checkpoint)
        verdict, why = _verdict(cfg.pipeline, out, dense=_is_dense(candidate), first=not attempts)
        recipe = variant_name(candidate)
        attempts.append(CompressAttempt(tried_as=label, recipe=recipe, passed=verdict, why=why, **out.model_dump(
            include={"accuracy", "size_mb", "latency_ms", "accuracy_drop_pts", "size_ratio", "latency_ratio", "artifact"})))
        if verdict:
            served = out, recipe, label
            break
    assert served is not None  # the dense attempt always passes
    out, recipe, label = served
    stable = cfg.run_dir / "compress" / (cfg.compress.variant or "pipeline")
    # A stable name: a RayService or `raylm serve` config points at <run>/compress/pipeline.
    with atomic_directory(stable) as tmp:
        shutil.copytree(out.artifact, tmp, dirs_exist_ok=True)
    dense = DenseReference(accuracy=out.dense_accuracy, size_mb=out.dense_size_mb, latency_ms=out.dense_latency_ms,
                           runtime=out.dense_runtime)
    return CompressStage(**out.model_dump(exclude={"artifact"}), artifact=str(stable), recipe=recipe, tried_as=label,
                         source_artifact=out.artifact, dense=dense, attempts=attempts)


def _verdict(pipeline: PipelineConfig, out: Objectives, *, dense: bool, first: bool) -> tuple[bool, str]:
    """Whether the pipeline serves this attempt, and why (the accuracy guard, then the gain gate)."""
    within = out.accuracy_drop_pts <= pipeline.max_accuracy_drop
    if dense and first:  # the sweep chose a dense point (e.g. tune.objectives: [accuracy] ranks it first)
        verdict, why = True, "the dense model: the sweep's choice (a dense point), nothing compressed to try"
    elif dense:
        verdict, why = True, "the dense model: nothing compressed passed"
    elif within and out.gain:
        verdict, why = True, f"{out.gain_reason}, {out.accuracy_drop_pts:+.2f} pts"
    elif not within:
        verdict, why = False, (f"accuracy drop {out.accuracy_drop_pts:.2f} pts exceeds "
                               f"pipeline.max_accuracy_drop={pipeline.max_accuracy_drop}")
    else:
        verdict, why = False, out.gain_reason
    if not verdict and pipeline.serve_over_budget and first:
        verdict, why = True, f"served over budget (pipeline.serve_over_budget=true): {why}"
    return verdict, why


def _stage_evaluate(cfg: RaylmConfig, record: PipelineRecord) -> EvaluateStage:
    """The artifact reloaded from disk, as serving loads it, on the whole validation split."""
    import numpy as np

    from raylm.artifacts import load_artifact
    from raylm.compress.measure import collect
    from raylm.data import MODEL_INPUTS, build_datasets

    from raylm.storage import localize

    compressed = record.stages.compress
    artifact_dir = localize(compressed.artifact, cfg.train.storage_options)
    artifact = load_artifact(artifact_dir)
    chosen = _chosen_config(cfg, record.stages.tune.params)
    data = build_datasets(chosen)
    inputs = MODEL_INPUTS[cfg.task.modality]
    val = collect(data.validation, inputs + ("label",))
    preds = np.concatenate([artifact.predict({n: val[n][i:i + 256] for n in inputs}).argmax(-1)
                            for i in range(0, len(val["label"]), 256)])
    labels = artifact.meta.get("labels") or artifact.meta["task"]["labels"]
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(confusion, (val["label"], preds), 1)
    size = sum(f.stat().st_size for f in artifact_dir.iterdir() if f.name.startswith("model."))
    accuracy = float((preds == val["label"]).mean())
    drop = round((compressed.dense.accuracy - accuracy) * 100, 3)
    if drop > cfg.pipeline.max_accuracy_drop and not cfg.pipeline.serve_over_budget:
        raise PipelineError(f"evaluate: {compressed.artifact} scores {accuracy:.4f}, {drop:.2f} points under the dense "
                            f"model (pipeline.max_accuracy_drop={cfg.pipeline.max_accuracy_drop}): not served")
    return EvaluateStage(artifact=compressed.artifact, accuracy=accuracy, accuracy_drop_pts=drop,
                         samples=int(len(val["label"])), size_mb=size / 1e6, latency_ms=compressed.latency_ms,
                         labels=labels, confusion=confusion.tolist())


def _stage_serve(cfg: RaylmConfig, record: PipelineRecord) -> ServeStage:
    """Deploy the artifact on Serve and send one real request to it."""
    import requests
    from ray import serve

    from raylm.serve import build_app
    from raylm.serve.lifecycle import serving_address

    serving = cfg.serve
    compressed = record.stages.compress
    app = build_app([f"{compressed.recipe}={compressed.artifact}"], serving)
    serve.start(http_options=serving.http_options())
    serve.run(app, name="raylm", route_prefix="/", blocking=False)
    host, port = serving_address(serving)  # a cluster's running Serve keeps its own port
    url = f"http://{host}:{port}/predict"
    sample = _smoke_sample(cfg)
    if sample is None:
        return ServeStage(url=url, app="raylm", smoke="skipped: the data source holds no raw items to send")
    body, expected = sample
    headers = {serving.api_key_header: os.environ[serving.api_key_env]} if serving.api_key_env else {}
    started = time.perf_counter()
    response = requests.post(url, json=body, headers=headers, timeout=60)
    if response.status_code != 200:
        raise PipelineError(f"serve: the smoke request to {url} answered {response.status_code}: {response.text[:300]}")
    predicted = response.json()["predictions"][0]["label"]
    return ServeStage(url=url, app="raylm", smoke=SmokeRequest(
        status=200, expected=expected, predicted=predicted, correct=predicted == expected,
        latency_ms=round((time.perf_counter() - started) * 1e3, 1)))


_RUNNERS = {"tune": _stage_tune, "train": _stage_train, "compress": _stage_compress,
            "evaluate": _stage_evaluate, "serve": _stage_serve}


def reentry_stage(cfg: RaylmConfig, record: PipelineRecord, stop: str) -> str:
    """Where a rerun of the same command continues: after the stages the record holds for this very
    config (a run killed in ``compress`` keeps its sweep and its retrain), else from the start."""
    if not _same_run_config(record.config, cfg.to_dict()):
        return STAGES[0]
    for stage in STAGES[:STAGES.index(stop) + 1]:
        if getattr(record.stages, stage) is None:
            return stage
    return stop  # a finished run: its last stage again (e.g. serve the recorded artifact once more)


def _same_run_config(recorded: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """Whether a recorded config is this one, apart from where the run is tracked (switching MLflow
    on for a rerun continues the run, it does not redo it)."""
    if not isinstance(recorded, dict):
        return False
    return {k: v for k, v in recorded.items() if k != "tracking"} == {k: v for k, v in current.items() if k != "tracking"}


SWEEP_SECTIONS = ("task", "data", "model", "train", "augment", "compress", "tune")  # what a sweep's trials read


def _refuse_a_changed_resume(cfg: RaylmConfig) -> None:
    """A rerun continues the run's interrupted sweep from its saved config (``_stage_tune``): a changed override
    (``tune.num_samples=6`` -> ``3``) was silently ignored. Refused before Ray starts, naming the keys and both
    ways on. Sections the sweep does not read (``pipeline``, ``serve``, ``tracking``) may change."""
    from raylm.tune.sweep import SWEEP_CONFIG

    saved_file = cfg.run_location.join("tune", SWEEP_CONFIG)
    try:
        saved = json.loads(saved_file.read_bytes()) if saved_file.exists() else None
    except (OSError, ValueError):
        return  # unreadable: the sweep's own resume says what is wrong with it
    if not isinstance(saved, dict):
        return
    from raylm.tracking.runs import flat_params

    current = cfg.to_dict()
    was, now = (flat_params({k: tree.get(k) for k in SWEEP_SECTIONS}) for tree in (saved, current))
    changed = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
    if changed:
        shown = ", ".join(f"{k}: {was.get(k, '-')} -> {now.get(k, '-')}" for k in changed[:5])
        raise ConfigError(f"tune: this run's sweep ({saved_file.parent.uri}) was started with another "
                          f"config ({shown}{', ...' if len(changed) > 5 else ''}); rerun the same command to continue "
                          "it, or give another train.name to start a new sweep")


def check_entry(cfg: RaylmConfig, start: str | None, stop: str) -> str:
    """The stage to start from (``start=None``: where an earlier run of the same config stopped), refused with
    a ConfigError when the stages are out of order, an earlier stage the run needs is not recorded, the sweep's
    space is wrong, or the serve port is taken. Reads the run's record only: the CLI calls it before the run's
    directory and status exist, so a mistyped command neither creates a run nor marks a finished one failed."""
    if start is None:
        start = reentry_stage(cfg, _committed_record(cfg), stop) if stop in STAGES else STAGES[0]
    if start not in STAGES or stop not in STAGES or STAGES.index(start) > STAGES.index(stop):
        raise ConfigError(f"--from {start} --to {stop}: stages run in the order {' -> '.join(STAGES)}")
    record = _committed_record(cfg)
    for earlier in STAGES[:STAGES.index(start)]:
        if getattr(record.stages, earlier) is None:
            raise ConfigError(f"--from {start}: {cfg.run_location.join(RECORD)} has no '{earlier}' stage; run from "
                              f"{earlier} (or pass the run's train.name)")
    if start == "tune":
        from raylm.tune import check_space

        check_space(cfg)
        _refuse_a_changed_resume(cfg)
    from raylm.runtime import check_port_free, will_start_ray

    if stop == "serve" and will_start_ray():  # the serve stage's port, free before minutes of sweep and training
        check_port_free(cfg.serve.host, cfg.serve.port, "serve.port")
    return start


def run_pipeline(cfg: RaylmConfig, *, start: str | None = None, stop: str = "serve", verbose: bool = True) -> PipelineRecord:
    """Run stages ``start``..``stop``; earlier stages' outputs come from ``<run_dir>/pipeline.json``.
    ``start=None``: re-enter where an earlier run of the same config stopped (:func:`reentry_stage`)."""
    from raylm.data import data_source, reusing
    from raylm.storage import run_workspace

    start = check_entry(cfg, start, stop)
    record = _committed_record(cfg)
    # With URI storage the stages write into a local scratch of the run, committed to storage after
    # every stage and deleted at the end (raylm/storage/workspace.py); local storage: the run directory.
    # data.path resolved once per run: every stage's build_datasets and the smoke request take the record.
    # Tracking on: one MLflow run for the whole pipeline; its sweep's trials are its children and its
    # retrain logs its epochs into it (raylm/tracking/).
    from raylm.tracking import tracked_run

    with run_workspace(cfg.run_location) as run_dir, reusing(data_source(cfg)), \
            tracked_run(cfg, "pipeline") as tracked:
        return _run_stages(cfg, record, run_dir, start, stop, verbose, tracked)


def _run_stages(cfg: RaylmConfig, record: PipelineRecord, run_dir: Path, start: str, stop: str,
                verbose: bool, tracked=None) -> PipelineRecord:
    from raylm.capacity import check_run_paths
    from raylm.console import pipeline_stage
    from raylm.runtime import ensure_ray, quiet_data_progress
    from raylm.storage import public_paths, publish_workspace
    from raylm.tracking import track_stage
    from raylm.tune.results import sweep_table

    record.config = cfg.to_dict()
    ensure_ray(ingress=cfg.serve.ingress)
    check_run_paths(cfg)  # node-local paths on a multi-node cluster: refused before the sweep, not at retrain
    quiet_data_progress()
    table = partial(sweep_table, run_dir / "tune")  # read when the sweep stage ends, not before
    for stage in STAGES[STAGES.index(start):STAGES.index(stop) + 1]:
        began = time.perf_counter()
        with pipeline_stage(stage, cfg, record, table=table) if verbose else nullcontext(lambda result: None) as shown:
            result = _RUNNERS[stage](cfg, record)
            shown(result)
        result.seconds = round(time.perf_counter() - began, 1)
        # URIs, not this process's scratch, with URI storage
        setattr(record.stages, stage, STAGE_RECORDS[stage].model_validate(public_paths(result.model_dump(mode="json"))))
        for later in STAGES[STAGES.index(stage) + 1:]:
            setattr(record.stages, later, None)  # made from the old output: stale now
        _write_record(run_dir, record)
        # MLflow, when on: figures; registry after evaluate (the stages as pipeline.json holds them)
        track_stage(cfg, tracked, stage, record.to_json()["stages"], run_dir)
        publish_workspace(cfg.run_location)  # the stage's files, then its record, committed
    record.run_dir = cfg.run_location.uri
    return record
