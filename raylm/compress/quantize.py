"""Export to ONNX and int8 quantization with ONNX Runtime.

Why ONNX Runtime and not torch.ao: torch.ao.quantization (eager and FX) is deprecated in favour
of torchao's PT2E flow, whose CPU int8 kernels need an x86 inductor build and ``torch.compile``
at load time. ONNX Runtime's quantizer is maintained, its int8 CPU kernels (VNNI/AVX2) are what a
CPU serving tier runs anyway, and the result is one ``model.onnx`` that loads without pickle and
without the model's Python class:

- ``dynamic``: weights int8 ahead of time, activations quantized per batch at run time (no
  calibration). The right fit for Linear/MatMul-heavy transformers (BERT, MiniLM).
- ``static``: weights and activations int8 with activation ranges calibrated on training samples,
  written as QDQ (QuantizeLinear/DequantizeLinear) pairs that ORT fuses into int8 Conv/MatMul: the
  fit for the CNN and Conv1D models, whose convolutions dynamic mode leaves slow.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch


def export_onnx(model: torch.nn.Module, example_inputs: dict[str, np.ndarray], path: str | os.PathLike[str]) -> Path:
    """fp32 ONNX with a dynamic batch axis; inputs named as the batch columns (``MODEL_INPUTS``)."""
    names = list(example_inputs)
    args = tuple(torch.from_numpy(example_inputs[n]) for n in names)
    dynamic = {n: {0: "batch"} for n in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings():
        # The TorchScript exporter: the torch.export-based default needs onnxscript, and both
        # give the same graph for these models. Its deprecation warning is expected.
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), args, str(path), dynamo=False, input_names=names, output_names=["logits"],
                          dynamic_axes=dynamic, opset_version=17, do_constant_folding=True)
    return Path(path)


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self):
        return next(self._feeds, None)


def quantize_onnx(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str], mode: str, *,
                  calibration: Iterable[dict[str, np.ndarray]] = (), per_channel: bool = True,
                  skip_op_types: Iterable[str] = ()) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        # ORT's recommended pre-processing: symbolic shape inference + graph optimization, so the
        # quantizer sees fused Conv/MatMul nodes with known shapes.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        if mode == "dynamic":
            from onnxruntime.quantization.registry import IntegerOpsRegistry

            op_types = [op for op in IntegerOpsRegistry if op not in set(skip_op_types)]
            quantize_dynamic(str(prepared), str(out_path), weight_type=QuantType.QInt8, per_channel=per_channel,
                             op_types_to_quantize=op_types)
        elif mode == "static":
            feeds = list(calibration)
            if not feeds:
                raise ValueError("compress.quantize.mode=static needs calibration samples (none were read)")
            quantize_static(str(prepared), str(out_path), _Calibration(feeds), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel)
        else:
            raise ValueError(f"compress.quantize.mode: {mode!r} is not dynamic or static")
    return Path(out_path)


def onnx_session(path: str | os.PathLike[str], threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
