"""``compress.quantize.mode=static-selective``: calibrated QDQ int8 for ONNX Runtime, with each model's
slow int8 convolutions left in fp32, chosen by timing.

Plain ``static`` quantizes every Conv. ONNX Runtime's int8 convolution (QLinearConv: im2col + a u8s8
GEMM) only beats its fp32 one (NCHWc kernels) when the reduction ``C_in * kernel`` is wide enough:
on the seed CNN, whose only Conv reads the 3 RGB channels (reduction 27), the int8 Conv took 2.5x
the fp32 one and the whole int8 model 1.4-1.6x the fp32 p50 (2-core x86 with VNNI, ORT profile),
while on resnet_small (reductions 144-576) the all-int8 model ran at 0.64x. A threshold alone does
not settle it either (resnet_small with its narrow convs in fp32: 0.74x, the Q/DQ pairs between
fp32 and int8 layers cost more than the convs save). So both candidates are written and timed
paired (alternating) on a calibration batch, and the faster one is kept.

Settings: QDQ format (ORT fuses DQ -> Conv -> ReLU -> Q into QLinearConv and DQ -> MatMul/Gemm -> Q
into QGemm / MatMulInteger at ``ORT_ENABLE_ALL``); weights int8 symmetric per channel (``per_channel``);
activations uint8 asymmetric (the u8s8 kernels x86 runs fastest, and ReLU outputs use the whole range);
MinMax calibration on ``compress.quantize.calibration_samples`` training rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import logging

import numpy as np

from raylm.compress.methods import Quantizer
from raylm.registry import COMPRESSION_METHODS

log = logging.getLogger(__name__)

# Convs whose reduction C_in * prod(kernel) is below this are the candidates kept in fp32 (the seed
# CNN's RGB conv: 27; resnet_small's 1x1 shortcuts: 16, 32; the seed Conv1D over 22 MFCCs: 66).
NARROW_REDUCTION = 72


def _conv_reductions(onnx_path: str | os.PathLike[str]) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    weights = {init.name: list(init.dims) for init in graph.initializer}
    return {node.name: int(np.prod(weights[node.input[1]][1:]))
            for node in graph.node if node.op_type == "Conv" and node.input[1] in weights}


class _Feeds:
    """onnxruntime's CalibrationDataReader protocol over a list of feed dicts (a fresh one per quantize call)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self):
        return next(self._feeds, None)


def write_static(prepared: str, out: str | os.PathLike[str], feeds: list[dict[str, np.ndarray]], *,
                 per_channel: bool, fp32_nodes: list[str]) -> Path:
    """One calibrated QDQ int8 model (u8 activations, s8 per-channel weights), ``fp32_nodes`` left unquantized."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(prepared, str(out), _Feeds(feeds), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=fp32_nodes,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return Path(out)


def _paired_ms(paths: list[Path], feeds: dict[str, np.ndarray], runs: int = 100) -> list[float]:
    """Lower-quartile ms of each file on ONNX Runtime (1 thread), timed in rotation so load hits all alike.
    The lower quartile, not the median: on a shared 2-core machine at load average ~90 the medians of
    the same two files swapped order between runs; the fast end of each distribution is the kernels' own."""
    import time

    from raylm.artifacts.onnx_runtime import onnx_predictor

    predicts = [onnx_predictor(p, 1) for p in paths]
    for predict in predicts:
        for _ in range(5):
            predict(feeds)
    times: list[list[float]] = [[] for _ in predicts]
    for i in range(runs):
        order = range(len(predicts)) if i % 2 == 0 else reversed(range(len(predicts)))
        for k in order:
            started = time.perf_counter()
            predicts[k](feeds)
            times[k].append(time.perf_counter() - started)
    return [float(np.percentile(t, 25) * 1000) for t in times]


def quantize_static_selective(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str], qc,
                              calibration: Iterable[dict[str, np.ndarray]] = ()) -> Path:
    """The faster of: every Conv int8, or the narrow Convs (``NARROW_REDUCTION``) kept fp32; timed on a calibration batch."""
    from raylm.compress.quantize import _prepared

    feeds = list(calibration)
    if not feeds:
        raise ValueError("compress.quantize.mode=static-selective needs calibration samples (none were read)")
    with _prepared(fp32_path) as prepared, tempfile.TemporaryDirectory() as tmp:
        narrow = sorted(name for name, k in _conv_reductions(prepared).items() if k < NARROW_REDUCTION)
        candidates = [write_static(prepared, Path(tmp) / "all.onnx", feeds, per_channel=qc.per_channel, fp32_nodes=[])]
        if narrow:
            candidates.append(write_static(prepared, Path(tmp) / "selective.onnx", feeds, per_channel=qc.per_channel,
                                           fp32_nodes=narrow))
        best = candidates[0]
        if len(candidates) > 1:
            ms = _paired_ms(candidates, feeds[0])
            best = candidates[int(np.argmin(ms))]
            log.info("static-selective: %s kept (ms per calibration batch: all-int8 %.3f, narrow convs fp32 %.3f; "
                     "fp32 convs: %s)", best.stem, ms[0], ms[1], narrow)
        shutil.copyfile(best, out_path)
    return Path(out_path)


COMPRESSION_METHODS.register("quantize", "static-selective", "torch")(
    Quantizer(apply=quantize_static_selective, calibrated=True))
