"""The pieces that make compression pay, without Ray: the gain gate, sparse ONNX storage that
rebuilds exact logits, the cubic prune schedule, dense candidates on the sweep's front, and the
order in which the pipeline tries recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raylm.compress.gate import gain_verdict
from raylm.compress.prune import gradual_sparsity, magnitude_prune
from raylm.artifacts.onnx_runtime import onnx_session
from raylm.artifacts.sparse import sparsify_onnx
from raylm.compress.quantize import export_onnx
from raylm.models.image import SeedCNN
from raylm.pipeline import choose
from raylm.tune.results import best_row, candidates, pareto_front

GATE = dict(min_size_gain=1.5, min_speedup=1.2, tolerance=0.1)


@pytest.mark.parametrize("size, latency, passed, words", [
    (0.27, 0.85, True, "smaller"),        # int8 MatMul: smaller and no slower
    (0.27, 12.7, False, "p50 12.70x"),    # int8 ConvInteger: smaller but 13x slower
    (1.0, 1.0, False, "no gain"),         # pruned weights stored dense: what the old pipeline served
    (1.05, 0.5, True, "faster"),          # structured: 2x faster, about the same size
    (1.3, 0.5, False, "no gain"),         # faster but 30 % larger
])
def test_gain_gate(size, latency, passed, words):
    verdict = gain_verdict(size, latency, **GATE)
    assert verdict["passed"] is passed and words in verdict["reason"]


def test_sparse_onnx_is_smaller_and_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = magnitude_prune(SeedCNN(10).eval(), 0.8)
    x = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    dense_path = export_onnx(model, {"image": x[:2]}, tmp_path / "dense.onnx")
    expected = onnx_session(dense_path).run(["logits"], {"image": x})[0]
    sparse_path = export_onnx(model, {"image": x[:2]}, tmp_path / "sparse.onnx")
    assert sparsify_onnx(sparse_path) == 1  # the big Dense weight; the conv kernel has < 1024 weights
    assert sparse_path.stat().st_size < 0.5 * dense_path.stat().st_size
    np.testing.assert_array_equal(onnx_session(sparse_path).run(["logits"], {"image": x})[0], expected)
    # A dense model is left as it was: sparse storage never makes a file bigger.
    plain = export_onnx(SeedCNN(10).eval(), {"image": x[:2]}, tmp_path / "plain.onnx")
    assert sparsify_onnx(plain) == 0


def test_cubic_schedule_reaches_the_target_before_the_last_epoch():
    ramp = [gradual_sparsity(0.8, e, 4) for e in range(1, 5)]
    assert ramp == sorted(ramp) and ramp[0] > 0
    assert ramp[2] == pytest.approx(0.8) and ramp[3] == pytest.approx(0.8)  # epoch 4 trains at the final mask
    assert gradual_sparsity(0.8, 1, 1) == pytest.approx(0.8)


def _row(tid, acc, mb, ms, *, dense=(0.95, 0.3, 1.0), gain=True, quant="dynamic"):
    d_acc, d_mb, d_ms = dense
    return {"trial_id": tid, "status": "completed", "accuracy": acc, "size_mb": mb, "latency_ms": ms,
            "params": {"train.lr": 0.01, "compress.quantize.mode": quant}, "kind": "compressed",
            "dense_accuracy": d_acc, "dense_size_mb": d_mb, "dense_latency_ms": d_ms,
            "accuracy_drop_pts": round((d_acc - acc) * 100, 3), "size_ratio": mb / d_mb, "latency_ratio": ms / d_ms,
            "gain": gain, "gain_reason": "x", "checkpoint": f"/ckpt/{tid}", "artifact": f"/art/{tid}"}


def test_dense_models_are_candidates_and_no_gain_ones_are_not():
    rows = [_row("a", 0.94, 0.08, 0.9), _row("b", 0.93, 0.3, 1.0, dense=(0.93, 0.3, 1.0), gain=False),
            {"trial_id": "c", "status": "stopped", "params": {}}]
    ids = {r["trial_id"] for r in candidates(rows)}
    assert ids == {"a", "a-dense", "b-dense"}  # b bought nothing: only its dense model competes
    dense = next(r for r in candidates(rows) if r["trial_id"] == "a-dense")
    assert dense["params"]["compress.quantize.mode"] == "none" and dense["params"]["train.lr"] == 0.01
    front = pareto_front(rows, ["accuracy", "latency_ms", "size_mb"])
    assert {r["trial_id"] for r in front} == {"a", "a-dense"}  # b-dense: less accurate, no smaller or faster
    assert best_row(rows, ["accuracy"])["kind"] == "dense"


def test_pipeline_tries_the_budgeted_choice_first_then_the_rest():
    good = _row("good", 0.945, 0.08, 0.9)
    lossy = _row("lossy", 0.90, 0.07, 0.8)  # 5 points under its dense model
    rows = [good, lossy]
    front = pareto_front(rows, ["accuracy", "latency_ms", "size_mb"])
    ranked = choose(front, best_row(rows, ["accuracy", "latency_ms"]), within=0.01, max_accuracy_drop=1.0)
    ids = [r["trial_id"] for r in ranked]
    assert ids[0] == "good"  # fastest within 1 point of the top; lossy is over budget in the sweep ...
    assert ids[-1] == "lossy"  # ... and tried last: the retrain may recover it, the guard decides
    assert any(r["kind"] == "dense" for r in ranked[1:])  # the fallback is always there
