"""Opt-in: `python -m pytest -m gpu` on a machine with CUDA."""

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.oracles import assert_beats_chance

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_gpu_worker_trains_in_bf16(ray_local, tiny_config):
    from raylm.train import fit

    outcome = fit(tiny_config("image", "train.num_workers=1", "train.use_gpu=auto", "train.precision=auto"))
    assert_beats_chance(outcome.metrics["val_accuracy"], outcome.metrics["val_samples"])
    assert {row["device"] for row in outcome.history} == {"cuda"}  # trained on the GPU, not quietly on the CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sweep_trials_train_on_the_gpu_and_asha_frees_it(ray_local, tiny_config):
    """Each trial's Train worker takes the GPU; a trial ASHA stops gives it back to the next one."""
    from raylm.tune import sweep

    cfg = tiny_config("image", "train.num_workers=1", "train.use_gpu=true", "train.epochs=3",
                      "compress.latency_runs=3", "tune.space={train.lr: {grid: [0.01, 1.0e-7]}}", "tune.num_samples=2",
                      "tune.scheduler=asha", "tune.export=best")
    result = sweep(cfg, verbose=False)
    statuses = [r["status"] for r in result.rows]
    assert statuses.count("completed") >= 1 and "stopped" in statuses and "error" not in statuses, result.rows
    for row in result.rows:
        history = [json.loads(line) for line in (Path(row["trial_dir"]) / "result.json").read_text().splitlines()]
        assert {h["device"] for h in history if "device" in h} == {"cuda"}, row["trial_id"]
