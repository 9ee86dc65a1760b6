"""The pipeline end to end on tiny settings: sweep -> retrain -> compress -> evaluate -> a served
endpoint that answers; then re-entry at compress without redoing the sweep or the training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from raylm.config import ConfigError
from tests.helpers.pipeline import _ARGS
from tests.helpers.ports import free_port as _free_port
from tests.helpers.oracles import assert_beats_chance

pytestmark = pytest.mark.integration


def test_pipeline_end_to_end_then_reentry_at_compress(ray_local, tiny_config):
    from ray import serve

    from raylm.data.sources import RESOLUTIONS
    from raylm.pipeline import format_summary, run_pipeline

    port = _free_port()
    cfg = tiny_config(*_ARGS, f"serve.port={port}")
    try:
        resolved = RESOLUTIONS["count"]
        record = run_pipeline(cfg, verbose=False)
        # data.path resolved once for the run: sweep decode, retrain, compress attempts, evaluate, smoke request.
        assert RESOLUTIONS["count"] == resolved + 1
        stages = record.to_json()["stages"]  # the record as pipeline.json holds it
        assert list(stages) == ["tune", "train", "compress", "evaluate", "serve"]
        assert stages["tune"]["completed"] == 2 and stages["tune"]["chosen"] in stages["tune"]["pareto_front"]
        assert stages["train"]["metrics"]["epoch"] == 2
        assert_beats_chance(stages["evaluate"]["accuracy"], stages["evaluate"]["samples"])
        # The sweep's point was retrained with its own hyperparameters: Tune's params.json of the chosen
        # trial against the resolved config in the retrained checkpoint's raylm.json.
        chosen_id = stages["tune"]["chosen"].removesuffix("-dense")
        (trial_dir,) = [d for d in Path(stages["tune"]["tune_dir"]).iterdir() if d.is_dir() and chosen_id in d.name]
        tuned = {k: v for k, v in json.loads((trial_dir / "params.json").read_text()).items() if k.startswith("train.")}
        retrained = json.loads((Path(stages["train"]["checkpoint"]) / "raylm.json").read_text())["config"]
        assert tuned and {k: retrained["train"][k.split(".", 1)[1]] for k in tuned} == tuned, (tuned, retrained["train"])
        assert retrained["train"]["epochs"] == cfg.pipeline.retrain_epochs
        assert stages["compress"]["artifact"].startswith(str(cfg.run_dir / "compress"))
        smoke = stages["serve"]["smoke"]
        assert smoke["status"] == 200 and smoke["predicted"] == smoke["expected"] and smoke["correct"]
        # The served model was judged against the dense retrain, and whatever was served is within budget.
        compressed = stages["compress"]
        assert compressed["dense"]["runtime"] == "onnx-fp32" and compressed["attempts"][-1]["passed"]
        assert stages["evaluate"]["accuracy_drop_pts"] <= cfg.pipeline.max_accuracy_drop
        assert requests.get(stages["serve"]["url"].replace("/predict", "/healthz"), timeout=30).status_code == 200
        summary = format_summary(record)
        assert stages["serve"]["url"] in summary and "evaluate" in summary

        checkpoint = stages["train"]["checkpoint"]
        swept = dict(stages["tune"])
        trained = sorted(p.name for p in (cfg.run_dir / "train").glob("checkpoint_*"))
        # Re-enter at compress with a recipe that destroys the model (99.5 % of every layer, one-shot,
        # no fine-tune): the guard refuses it, says why, and serves the next candidate that passes.
        destroy = tiny_config(*_ARGS, "compress.prune.method=magnitude", "compress.prune.sparsity=0.995",
                              "compress.prune.scope=layer", "pipeline.prune_epochs=0", "pipeline.recovery_epochs=0",
                              f"serve.port={port}")  # Serve keeps the port it started with
        # As if the sweep had chosen a compressed recipe: the record's choice keeps only the hyperparameters,
        # so the destroying compress section of the config is what the pipeline tries first.
        saved = json.loads((cfg.run_dir / "pipeline.json").read_text())
        saved["stages"]["tune"] |= {"params": {"train.lr": stages["tune"]["params"]["train.lr"]}, "alternates": []}
        (cfg.run_dir / "pipeline.json").write_text(json.dumps(saved))
        swept = dict(saved["stages"]["tune"])
        rerun = run_pipeline(destroy, start="compress", verbose=False)
        again = rerun.to_json()["stages"]
        assert RESOLUTIONS["count"] == resolved + 2  # the re-entered run resolved it once more
        assert again["tune"] == swept and again["train"]["checkpoint"] == checkpoint  # records kept, not redone
        first, served = again["compress"]["attempts"][0], again["compress"]["attempts"][-1]
        assert not first["passed"] and "exceeds pipeline.max_accuracy_drop" in first["why"], first
        assert served["passed"] and served["recipe"] != first["recipe"] and "magnitude" not in served["recipe"]
        assert again["evaluate"]["accuracy_drop_pts"] <= 1.0
        assert again["serve"]["smoke"]["status"] == 200 and again["serve"]["smoke"]["correct"]
        assert "rejected: accuracy drop" in format_summary(rerun)
        assert sorted(p.name for p in (cfg.run_dir / "train").glob("checkpoint_*")) == trained  # not retrained
    finally:
        serve.shutdown()


def test_reentry_needs_the_earlier_stages(ray_local, tiny_config):
    from raylm.pipeline import run_pipeline

    cfg = tiny_config("image", "train.name=never-ran", "tune.space={train.lr: {choice: [0.01]}}")
    with pytest.raises(ConfigError, match="has no 'tune' stage"):
        run_pipeline(cfg, start="compress", verbose=False)
    with pytest.raises(ConfigError, match="stages run in the order"):
        run_pipeline(cfg, start="serve", stop="train", verbose=False)
