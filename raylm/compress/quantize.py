"""Export to ONNX (and safetensors) and int8 quantization with ONNX Runtime.

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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from raylm.artifacts import ONNX, WEIGHTS
from raylm.artifacts.onnx_runtime import onnx_predictor, onnx_session  # noqa: F401 (compress measures with them)
from raylm.compress.methods import Exporter, Quantizer
from raylm.registry import COMPRESSION_METHODS


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


@contextmanager
def _prepared(fp32_path: str | os.PathLike[str]) -> Iterator[str]:
    """ORT's recommended pre-processing: symbolic shape inference + graph optimization, so the
    quantizer sees fused Conv/MatMul nodes with known shapes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        yield str(prepared)


def quantize_dynamic_onnx(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str], qc,
                          calibration: Iterable[dict[str, np.ndarray]] = ()) -> Path:
    """int8 weights; activations quantized per batch at run time, except ``qc.skip_op_types``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    op_types = [op for op in IntegerOpsRegistry if op not in set(qc.skip_op_types)]
    with _prepared(fp32_path) as prepared:
        quantize_dynamic(prepared, str(out_path), weight_type=QuantType.QInt8, per_channel=qc.per_channel,
                         op_types_to_quantize=op_types)
    return Path(out_path)


def quantize_static_onnx(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str], qc,
                         calibration: Iterable[dict[str, np.ndarray]] = ()) -> Path:
    """int8 weights and activations, activation ranges calibrated on ``calibration`` (QDQ format)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    feeds = list(calibration)
    if not feeds:
        raise ValueError("compress.quantize.mode=static needs calibration samples (none were read)")
    with _prepared(fp32_path) as prepared:
        quantize_static(prepared, str(out_path), _Calibration(feeds), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=qc.per_channel)
    return Path(out_path)


def _sparse_storage(path: Path, recipe, feeds: dict[str, np.ndarray] | None = None) -> dict:
    """The artifacts layer's sparse layouts (lossless): fp32 sparse initializers and int8 bitmasks,
    the latter checked against the dense-layout file's logits on ``feeds``."""
    from raylm.artifacts.sparse import sparsify_onnx, store_sparse_int8

    if not recipe.sparse_storage:
        return {}
    return {"sparse_tensors": sparsify_onnx(path)} | store_sparse_int8(path, feeds, recipe.latency_threads)


def _save_safetensors(model: torch.nn.Module, example_inputs: dict[str, np.ndarray], path: Path) -> Path:
    from safetensors.torch import save_model

    save_model(model, str(path))
    return path


COMPRESSION_METHODS.register("quantize", "dynamic", "torch")(Quantizer(apply=quantize_dynamic_onnx))
COMPRESSION_METHODS.register("quantize", "static", "torch")(
    Quantizer(apply=quantize_static_onnx, calibrated=True))
COMPRESSION_METHODS.register("export", "onnx", "torch")(Exporter(
    model_file=ONNX, runtimes=("onnx-fp32", "onnx-int8"), write=export_onnx, reader=onnx_predictor,
    shrink=_sparse_storage))
COMPRESSION_METHODS.register("export", "safetensors", "torch")(Exporter(
    model_file=WEIGHTS, runtimes=("torch", "torch"), write=_save_safetensors))
