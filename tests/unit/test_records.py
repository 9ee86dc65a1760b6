"""Typed records at the stage boundaries (issue #26, item 2): a run directory written by raylm before the
records existed (tests/fixtures/run_before_records: pipeline.json, tune/trials.json and a compress report
from a pipeline run of main c7e65d2) still loads, summarizes and reports the same; a mistyped key fails
where the record is built; a file from a newer raylm, or with a mistyped field, is refused naming the
file and the field. No Ray: records are plain pydantic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from raylm.config import ConfigError
from raylm.records import (CompressReport, PipelineRecord, RecordError, SweepResults, parse_record, read_record)
from raylm.records.pipeline import SweepMeasurement, TuneStage
from tests.helpers.paths import REPO

OLD_RUN = REPO / "tests" / "fixtures" / "run_before_records"


def _json(path: Path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("model, name", [(PipelineRecord, "pipeline.json"), (SweepResults, "tune/trials.json"),
                                         (CompressReport, "compress/report.json")])
def test_a_record_written_before_the_change_loads_and_writes_back_unchanged(model, name):
    """Version 0 (no record_version) reads; written back it is the same JSON, key order included, plus the
    version of this raylm (the fields are the same)."""
    record = read_record(model, OLD_RUN / name)
    assert record.record_version == 0
    written = record.to_json()
    assert written.pop("record_version") == model.RECORD_VERSION == 1
    assert json.dumps(written) == json.dumps(_json(OLD_RUN / name))


def test_the_old_pipeline_record_summarizes_as_the_previous_raylm_printed_it():
    from raylm.pipeline import format_summary

    record = read_record(PipelineRecord, OLD_RUN / "pipeline.json")
    assert record.stages.names() == ["tune", "train", "compress", "evaluate", "serve"]
    assert record.stages.compress.attempts[-1].passed and record.stages.serve.smoke.correct
    record.run_dir = "x"
    assert format_summary(record) == (OLD_RUN / "summary.txt").read_text().rstrip("\n")  # main c7e65d2's output


def test_the_old_sweep_table_and_runs_row(tmp_path):
    from raylm.report.collect import summarize
    from raylm.report.runs import format_runs, list_runs
    from raylm.tune.results import sweep_table

    # main c7e65d2's table, except the two dense rows on the saved front, now marked (stop 42: they never were)
    assert sweep_table(OLD_RUN / "tune") == (OLD_RUN / "sweep_table.txt").read_text().rstrip("\n")
    shutil.copytree(OLD_RUN, tmp_path / "runs" / "old")
    row = summarize(tmp_path / "runs" / "old")
    stages = _json(OLD_RUN / "pipeline.json")["stages"]
    assert (row.kind, row.stage, row.url) == ("pipeline", "serve", stages["serve"]["url"])
    trials = _json(OLD_RUN / "tune" / "trials.json")["trials"]
    assert row.best_accuracy == max([stages["evaluate"]["accuracy"], stages["compress"]["accuracy"]]
                                    + [t[k] for t in trials if t["status"] == "completed" for k in ("accuracy", "val_accuracy")])
    (listed,) = list_runs(tmp_path / "runs")
    assert listed.name == "old" and listed.state == "-"
    # The table's accuracy of a pipeline is its served model's (evaluate), not the best of every stage's.
    assert row.served_accuracy == stages["evaluate"]["accuracy"]
    assert format_runs([listed]).splitlines()[1].split()[:5] == ["old", "pipeline", "serve", "-",
                                                                 f"{stages['evaluate']['accuracy']:.3f}"]


def test_the_report_of_an_old_run_shows_its_stages(tmp_path):
    from raylm.report.collect import read_run
    from raylm.report.page import render

    shutil.copytree(OLD_RUN, tmp_path / "old")
    run = read_run(tmp_path / "old")
    assert run["stages"] == _json(OLD_RUN / "pipeline.json")["stages"]
    html = render(run)
    assert "Compression candidates" in html and "magnitude80-global-ft2-fp32" in html and "d0f685bc" in html


def test_a_mistyped_key_fails_where_the_record_is_built():
    fields = dict(tune_dir="/r/tune", trials=2, completed=2, pareto_front=["a"], chosen="a", params={"train.lr": 0.01},
                  sweep_measurement=SweepMeasurement(accuracy=0.9))
    assert TuneStage(**fields).completed == 2
    with pytest.raises(ValidationError, match="complted"):
        TuneStage(**(fields | {"complted": 2}))
    stage = TuneStage(**fields)
    with pytest.raises(ValidationError, match="complted"):
        stage.complted = 3  # assignment is checked too (the pipeline sets ``seconds`` after a stage)
    with pytest.raises(ValidationError, match="trials"):
        TuneStage(**(fields | {"trials": "two"}))


def test_a_written_record_reads_back_equal(tmp_path):
    from raylm.pipeline import _read_record, _write_record

    record = read_record(PipelineRecord, OLD_RUN / "pipeline.json")
    record.stages.serve = None  # a stage made stale is absent from the file, not null
    _write_record(tmp_path, record)
    assert "serve" not in _json(tmp_path / "pipeline.json")["stages"]
    again = _read_record(tmp_path)
    assert again.record_version == PipelineRecord.RECORD_VERSION and again.stages == record.stages
    assert again.config == record.config


def test_a_record_from_a_newer_raylm_is_refused_naming_file_and_version(tmp_path):
    from raylm.pipeline import _read_record
    from raylm.report.collect import summarize

    data = _json(OLD_RUN / "pipeline.json") | {"record_version": PipelineRecord.RECORD_VERSION + 1}
    (tmp_path / "pipeline.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"pipeline\.json: record_version: .*newer raylm.*record_version 2"):
        _read_record(tmp_path)  # re-entry: before Ray starts, as a config error
    with pytest.raises(RecordError, match=r"pipeline\.json: record_version"):
        summarize(tmp_path)  # raylm runs / the report: not silently shown as empty


def test_a_mistyped_field_in_a_file_is_refused_naming_the_field(tmp_path):
    data = _json(OLD_RUN / "pipeline.json")
    data["stages"]["compress"]["attempts"][0]["passd"] = data["stages"]["compress"]["attempts"][0].pop("passed")
    with pytest.raises(RecordError, match=r"run/pipeline\.json: stages\.compress\.attempts\.0\.passed: Field required"):
        parse_record(PipelineRecord, data, "run/pipeline.json")
    sweep = _json(OLD_RUN / "tune" / "trials.json")
    sweep["trials"][0]["status"] = "finished"
    with pytest.raises(RecordError, match=r"trials\.json: trials\.0\.status"):
        parse_record(SweepResults, sweep, "tune/trials.json")
    with pytest.raises(RecordError, match="expected a JSON object"):
        parse_record(PipelineRecord, [], "pipeline.json")


def test_the_compress_stage_judges_an_attempt_by_its_objectives():
    """The accuracy guard, then the gain gate, on the typed objectives (the dense model always passes)."""
    from raylm.config import PipelineConfig
    from raylm.pipeline import _verdict
    from raylm.records import Objectives

    compress_stage = read_record(PipelineRecord, OLD_RUN / "pipeline.json").stages.compress
    measured = Objectives(**compress_stage.model_dump(include=set(Objectives.model_fields)))
    budget = PipelineConfig(max_accuracy_drop=1.0)
    assert _verdict(budget, measured, dense=False, first=True) == (True, "2.51x smaller, p50 1.03x, +0.27 pts")
    lossy = measured.model_copy(update={"accuracy_drop_pts": 3.5})
    assert _verdict(budget, lossy, dense=False, first=True) == (
        False, "accuracy drop 3.50 pts exceeds pipeline.max_accuracy_drop=1.0")
    no_gain = measured.model_copy(update={"gain": False, "gain_reason": "no gain: size 0.98x"})
    assert _verdict(budget, no_gain, dense=False, first=False) == (False, "no gain: size 0.98x")
    assert _verdict(budget, lossy, dense=True, first=False) == (True, "the dense model: nothing compressed passed")
    # the first attempt dense: the sweep chose it, nothing compressed was tried (was "nothing compressed passed")
    assert _verdict(budget, lossy, dense=True, first=True)[1].startswith("the dense model: the sweep's choice")
    over = PipelineConfig(max_accuracy_drop=1.0, serve_over_budget=True)
    assert _verdict(over, lossy, dense=False, first=True)[1].startswith("served over budget (pipeline.serve_over_budget=true)")
    assert not _verdict(over, lossy, dense=False, first=False)[0]  # only the first attempt is served over budget


def test_the_compress_verdict_says_its_latency_ratio_is_the_paired_one_and_signs_the_accuracy_change():
    """A user read the table's two p50s (0.50 vs 0.32 ms) against the verdict's 1.05x: the verdict's ratio
    is the gate's paired one, and says so; "-4.64 pts accuracy drop" read as a double negative."""
    from raylm.compress.pipeline import summary_text

    report = read_record(CompressReport, OLD_RUN / "compress" / "report.json")
    verdict = summary_text(report, 16).splitlines()[-1]
    assert verdict.startswith("vs dense: accuracy -0.27 pts, size 0.398x, p50 1.033x at batch 16 (paired: the two "
                              "models timed in alternation; the table's p50s were timed apart): ")
    gained = report.model_copy(update={"ratios": report.ratios.model_copy(update={"accuracy_drop_pts": -4.64})})
    assert "vs dense: accuracy +4.64 pts" in summary_text(gained, 16)
    # `raylm compress` alone said "passed" of an artifact 9 points worse: the pipeline's guard is named
    lossy = report.model_copy(update={"ratios": report.ratios.model_copy(update={"accuracy_drop_pts": 9.09})})
    assert summary_text(lossy, 16, 1.0).splitlines()[-1] == (
        "accuracy: 9.09 pts below the dense model, past pipeline.max_accuracy_drop=1 (the pipeline would not serve "
        "it; the gain gate above judges size and latency only)")
    assert "max_accuracy_drop" not in summary_text(report, 16, 1.0)  # -0.27 pts: within it


def test_compress_with_a_config_writes_beside_the_checkpoints_run(tmp_path):
    """``raylm compress --checkpoint <run>/train/checkpoint_* --config ...`` put its artifact in a new run
    named after the config (image-resnet_small-<time>); it belongs to the checkpoint's run, unless named."""
    from raylm.compress.pipeline import compress_config

    checkpoint = _checkpoint_meta(tmp_path / "runs" / "rn" / "train" / "checkpoint_000001", "resnet_small")
    cfg = compress_config(checkpoint, REPO / "jobs" / "configs" / "image.yaml", ["model.name=resnet_small"])
    assert cfg.run_dir == tmp_path / "runs" / "rn" and cfg.model.name == "resnet_small"
    named = compress_config(checkpoint, REPO / "jobs" / "configs" / "image.yaml", [f"train.storage_path={tmp_path}/other",
                                                                                    "train.name=mine", "model.name=resnet_small"])
    assert named.run_dir == tmp_path / "other" / "mine"


def test_compress_of_a_copied_checkpoint_writes_beside_the_copy(tmp_path):
    """Without --config the checkpoint's recorded train.storage_path / train.name were used: a copy of another
    user's run compressed into the original's run directory. The copy's own run now, wherever it is."""
    import shutil

    from raylm.compress.pipeline import compress_config

    original = _checkpoint_meta(tmp_path / "theirs" / "rn" / "train" / "checkpoint_000001", "seed_cnn")
    recorded = compress_config(original, None, [])
    copy = tmp_path / "mine" / "copied"
    shutil.copytree(original.parent.parent, copy)
    assert compress_config(copy / "train" / "checkpoint_000001", None, []).run_dir == copy
    loose = tmp_path / "loose" / "ckpt"  # outside the <run>/train/ layout: beside its folder
    shutil.copytree(original, loose)
    assert compress_config(loose, None, []).run_dir == tmp_path / "loose"
    assert compress_config(loose, None, [f"train.storage_path={tmp_path}/x", "train.name=y"]).run_dir == tmp_path / "x" / "y"
    assert recorded.run_dir == tmp_path / "theirs" / "rn"


def _checkpoint_meta(directory, model_name: str, modality: str = "image"):
    """A checkpoint directory holding only its ``raylm.json`` (what compress reads before Ray starts)."""
    import json

    from raylm.config import load_config
    from raylm.train.checkpoint import FORMAT, META

    cfg = load_config(REPO / "jobs" / "configs" / f"{modality}.yaml", [f"model.name={model_name}"])
    directory.mkdir(parents=True)
    (directory / META).write_text(json.dumps({"format": FORMAT, "config": cfg.model_dump(mode="json"),
                                              "labels": ["a", "b"]}))
    return directory


@pytest.mark.parametrize("overrides, named", [(["model.name=resnet_small"], "model.name"),
                                              (["model.kwargs.channels=[8,16,32]"], "model.kwargs")])
def test_compress_with_a_config_of_another_model_is_refused_before_ray_naming_the_field(tmp_path, overrides, named):
    """--config of another model than the checkpoint's was refused only when the weights were loaded,
    after Ray's start, with an empty run directory made; now before, naming the field and the way out."""
    from raylm.compress.pipeline import CompressError, compress_config

    checkpoint = _checkpoint_meta(tmp_path / "runs" / "rn" / "train" / "checkpoint_000001", "seed_cnn")
    assert compress_config(checkpoint, REPO / "jobs" / "configs" / "image.yaml", []).model.name == "seed_cnn"
    with pytest.raises(CompressError, match=rf"^{named}: the config says .* trained with .*drop --config"):
        compress_config(checkpoint, REPO / "jobs" / "configs" / "image.yaml", overrides)
    assert not (tmp_path / "runs" / "rn" / "compress").exists()


def test_the_retrain_row_shows_the_epoch_compress_starts_from():
    """The retrain row showed the last epoch's accuracy (0.955) above a dense model of 1.000 measured on
    the best kept epoch: with the best epoch recorded, the row names it and shows its accuracy."""
    from raylm.pipeline import format_summary
    from raylm.records.pipeline import TrainMetrics

    record = read_record(PipelineRecord, OLD_RUN / "pipeline.json")
    record.run_dir = "x"
    last = record.stages.train.metrics
    record.stages.train.best = TrainMetrics(epoch=last.epoch - 2, val_accuracy=0.9987)
    (row,) = [line for line in format_summary(record).splitlines() if line.startswith("retrain")]
    assert row.startswith(f"retrain ({last.epoch} ep, best {last.epoch - 2}, dense)") and "0.999" in row
    assert "best" in record.stages.train.model_dump(mode="json")
