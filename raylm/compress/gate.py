"""The product's promise as a check: a compressed model counts only if it gains and stays accurate.

Every candidate is compared with the dense model of the same training, measured the same way
(the dense model in its backend's runtime: fp32 ONNX Runtime for torch, float TFLite for Keras; the
serving batch size; the same validation rows). It *gains* when it is
``min_size_gain`` times smaller without being more than ``gain_tolerance`` slower, or
``min_speedup`` times faster without being more than ``gain_tolerance`` larger.
"""

from __future__ import annotations

from typing import Any

from raylm.config import CompressConfig
from raylm.records import Measurement
from raylm.records.compress import Ratios


def gain_verdict(size_ratio: float, latency_ratio: float, *, min_size_gain: float, min_speedup: float,
                 tolerance: float) -> dict[str, Any]:
    """``{"passed": bool, "reason": str}`` for ratios compressed / dense (below 1 is better)."""
    smaller = size_ratio <= 1 / min_size_gain
    faster = latency_ratio <= 1 / min_speedup
    if smaller and latency_ratio <= 1 + tolerance:
        return {"passed": True, "reason": f"{1 / size_ratio:.2f}x smaller, p50 {latency_ratio:.2f}x"}
    if faster and size_ratio <= 1 + tolerance:
        return {"passed": True, "reason": f"{1 / latency_ratio:.2f}x faster, size {size_ratio:.2f}x"}
    if smaller or faster:
        return {"passed": False, "reason": f"no gain: size {size_ratio:.2f}x but p50 {latency_ratio:.2f}x of dense "
                                           f"(the other may cost at most {tolerance:.0%} more)"}
    return {"passed": False, "reason": f"no gain: size {size_ratio:.2f}x, p50 {latency_ratio:.2f}x of dense (needs "
                                       f"<= {1 / min_size_gain:.2f}x size or <= {1 / min_speedup:.2f}x p50)"}


def compression_ratios(dense: Measurement, compressed: Measurement, batch_size: int, compression: CompressConfig,
                       paired_latency_ratio: float | None = None) -> dict[str, Any]:
    """What the candidate costs and buys against the dense reference.
    ``paired_latency_ratio`` (measure.paired_latency_ratio), when given, decides over the two p50s
    measured apart."""
    size_ratio = compressed.file_bytes / dense.file_bytes
    latency_ratio = (paired_latency_ratio if paired_latency_ratio is not None
                     else compressed.p50_ms(batch_size) / dense.p50_ms(batch_size))
    return {"accuracy_drop_pts": round((dense.accuracy - compressed.accuracy) * 100, 3),
            "size_ratio": size_ratio, "latency_ratio": latency_ratio, "latency_batch_size": batch_size,
            "latency_ratio_timing": "paired" if paired_latency_ratio is not None else "apart",
            "gain": gain_verdict(size_ratio, latency_ratio, min_size_gain=compression.min_size_gain,
                                 min_speedup=compression.min_speedup, tolerance=compression.gain_tolerance)}


def ratios_to_dense(dense: Measurement, variant: Measurement, batch_sizes: tuple[int, ...]) -> dict[str, float]:
    """Every measured ratio of ``variant`` to ``dense`` (below 1: the variant is smaller / faster)."""
    out = {"accuracy_delta": variant.accuracy - dense.accuracy,
           "size_ratio": variant.file_bytes / dense.file_bytes,
           "gzip_size_ratio": variant.gzip_bytes / dense.gzip_bytes,
           "params_ratio": variant.params / dense.params,
           "nonzero_ratio": variant.nonzero_params / dense.nonzero_params}
    for b in batch_sizes:
        out[f"latency_p50_ratio_b{b}"] = variant.p50_ms(b) / dense.p50_ms(b)
    return out


def variant_ratios(dense: Measurement, compressed: Measurement, compression: CompressConfig, *, compresses: bool,
                   paired_latency_ratio: float | None = None) -> Ratios:
    """The report's ``ratios`` (either backend): every ratio to the dense model and the gate's verdict.
    ``compresses``: whether the recipe changes the model at all; the dense model itself never gains
    (a p50 ratio below 1 there is timing noise)."""
    ratios = ratios_to_dense(dense, compressed, (1, compression.serving_batch_size)) | compression_ratios(
        dense, compressed, compression.serving_batch_size, compression, paired_latency_ratio=paired_latency_ratio)
    if not compresses:
        ratios["gain"] = {"passed": False, "reason": "no gain: the dense model (nothing compressed)"}
    return Ratios(**ratios)
