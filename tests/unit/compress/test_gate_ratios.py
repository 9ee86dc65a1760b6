"""The gain gate's edges and the ratios every compression report carries (raylm/compress/gate.py)."""

from types import SimpleNamespace

import pytest

from raylm.compress.gate import compression_ratios, gain_verdict, ratios_to_dense, variant_ratios
from raylm.records import Measurement

GATE = dict(min_size_gain=2.0, min_speedup=1.25, tolerance=0.1)


@pytest.mark.parametrize("size, latency, reason", [
    (0.5, 1.1, "2.00x smaller, p50 1.10x"),      # exactly 1 / min_size_gain, exactly the tolerance slower
    (1.1, 0.8, "1.25x faster, size 1.10x"),      # exactly 1 / min_speedup, exactly the tolerance larger
])
def test_the_gate_passes_at_its_edges(size, latency, reason):
    assert gain_verdict(size, latency, **GATE) == {"passed": True, "reason": reason}


@pytest.mark.parametrize("size, latency, reason", [
    (0.5, 1.11, "no gain: size 0.50x but p50 1.11x of dense (the other may cost at most 10% more)"),
    (1.11, 0.8, "no gain: size 1.11x but p50 0.80x of dense (the other may cost at most 10% more)"),
    (0.51, 0.81, "no gain: size 0.51x, p50 0.81x of dense (needs <= 0.50x size or <= 0.80x p50)"),
])
def test_the_gate_fails_just_past_them_saying_why(size, latency, reason):
    assert gain_verdict(size, latency, **GATE) == {"passed": False, "reason": reason}


def _measured(accuracy, file_bytes, p50_b1, p50_b4, *, gzip_bytes=None, params=100, nonzero=100):
    return Measurement(accuracy=accuracy, samples=100, file_bytes=file_bytes, gzip_bytes=gzip_bytes or file_bytes,
                       params=params, nonzero_params=nonzero, sparsity=0.0, overall_sparsity=0.0, threads=1,
                       latency={"batch_1": {"p50_ms": p50_b1, "p95_ms": p50_b1},
                                "batch_4": {"p50_ms": p50_b4, "p95_ms": p50_b4}})


CC = SimpleNamespace(serving_batch_size=4, min_size_gain=2.0, min_speedup=1.25, gain_tolerance=0.1)


def test_ratios_compare_the_variant_with_the_dense_model():
    dense = _measured(0.9, 1000, 2.0, 8.0, gzip_bytes=900)
    int8 = _measured(0.85, 250, 1.0, 6.0, gzip_bytes=300, params=100, nonzero=50)
    ratios = compression_ratios(dense, int8, 4, CC)
    assert ratios == {"accuracy_drop_pts": 5.0, "size_ratio": 0.25, "latency_ratio": 0.75, "latency_batch_size": 4,
                      "latency_ratio_timing": "apart", "gain": {"passed": True, "reason": "4.00x smaller, p50 0.75x"}}
    paired = compression_ratios(dense, int8, 4, CC, paired_latency_ratio=1.5)
    assert paired["latency_ratio"] == 1.5 and paired["latency_ratio_timing"] == "paired" and not paired["gain"]["passed"]
    assert ratios_to_dense(dense, int8, (1, 4)) == {
        "accuracy_delta": pytest.approx(-0.05), "size_ratio": 0.25, "gzip_size_ratio": pytest.approx(1 / 3),
        "params_ratio": 1.0, "nonzero_ratio": 0.5, "latency_p50_ratio_b1": 0.5, "latency_p50_ratio_b4": 0.75}
    report = variant_ratios(dense, int8, CC, compresses=True).model_dump()
    assert report["gain"]["passed"] and report["latency_p50_ratio_b1"] == 0.5 and report["size_ratio"] == 0.25
    itself = variant_ratios(dense, _measured(0.9, 1000, 1.0, 1.0, gzip_bytes=900), CC, compresses=False)
    assert itself.gain.model_dump() == {"passed": False, "reason": "no gain: the dense model (nothing compressed)"}


def test_the_accuracy_drop_is_in_points_to_three_decimals_and_a_paired_ratio_reaches_the_report():
    dense = _measured(0.9, 1000, 2.0, 8.0)
    student = _measured(0.854321, 250, 1.0, 6.0)
    assert compression_ratios(dense, student, 4, CC)["accuracy_drop_pts"] == 4.568  # 4.5679 points
    report = variant_ratios(dense, student, CC, compresses=True, paired_latency_ratio=1.5)
    assert report.latency_ratio == 1.5 and report.latency_ratio_timing == "paired"
    assert report.gain.model_dump() == {"passed": False, "reason": "no gain: size 0.25x but p50 1.50x of dense "
                                                                   "(the other may cost at most 10% more)"}
