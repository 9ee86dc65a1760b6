"""The pipeline end to end on tiny settings: sweep -> retrain -> compress -> evaluate -> a served
endpoint that answers; then re-entry at compress without redoing the sweep or the training."""

from __future__ import annotations

import socket

import pytest
import requests

from raylm.config import ConfigError

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_ARGS = (
    "image", "train.name=pipe", "train.num_workers=1", "train.epochs=1",
    "tune.space={train.lr: {choice: [0.01, 0.005]}, compress.quantize.mode: {choice: [none, dynamic]}}",
    "tune.num_samples=2", "tune.max_concurrent_trials=1", "tune.export=none",
    "tune.objectives=[accuracy, latency_ms]", "compress.latency_runs=3", "compress.latency_warmup=1",
    "pipeline.retrain_epochs=2", "pipeline.retrain_workers=2", "pipeline.choose_within=0.05",
    "serve.replica_cpus=0.25", "serve.max_replicas=1")


def test_pipeline_end_to_end_then_reentry_at_compress(ray_local, tiny_config):
    from ray import serve

    from raylm.pipeline import format_summary, run_pipeline

    port = _free_port()
    cfg = tiny_config(*_ARGS, f"serve.port={port}")
    try:
        record = run_pipeline(cfg, verbose=False)
        stages = record.to_json()["stages"]  # the record as pipeline.json holds it
        assert list(stages) == ["tune", "train", "compress", "evaluate", "serve"]
        assert stages["tune"]["completed"] == 2 and stages["tune"]["chosen"] in stages["tune"]["pareto_front"]
        assert stages["train"]["metrics"]["epoch"] == 2
        assert stages["evaluate"]["accuracy"] > 0.7 and stages["evaluate"]["samples"] > 0
        # The sweep's point was retrained with its own hyperparameters.
        assert (cfg.run_dir / "train").is_dir() and stages["compress"]["artifact"].startswith(str(cfg.run_dir / "compress"))
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
        import json

        saved = json.loads((cfg.run_dir / "pipeline.json").read_text())
        saved["stages"]["tune"] |= {"params": {"train.lr": stages["tune"]["params"]["train.lr"]}, "alternates": []}
        (cfg.run_dir / "pipeline.json").write_text(json.dumps(saved))
        swept = dict(saved["stages"]["tune"])
        rerun = run_pipeline(destroy, start="compress", verbose=False)
        again = rerun.to_json()["stages"]
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
