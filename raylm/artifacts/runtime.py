"""``Runtime``: what an artifact runs on, whatever its file: ``predict(feeds) -> logits``.

Three implementations, one per ``artifact.json`` ``runtime``: ``TorchRuntime`` (safetensors weights
in the registry builder's module), ``raylm.artifacts.onnx_runtime.OnnxRuntime`` (ONNX Runtime) and
``raylm.artifacts.tflite_runtime.TFLiteRuntime`` (LiteRT). Feeds are named as the batch columns
(``raylm.data.MODEL_INPUTS``); logits come back as float32 numpy arrays.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runtime(Protocol):
    name: str  # "torch", "onnx" or "tflite"
    inputs: tuple[str, ...]  # the input spec: the feeds predict reads, in the model's order

    def predict(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...


class TorchRuntime:
    """``Runtime`` over a torch module (eval mode, CPU), positional inputs in ``inputs`` order."""

    name = "torch"

    def __init__(self, model: Any, inputs: tuple[str, ...]) -> None:
        self.model, self.inputs = model, inputs

    def predict(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(*(torch.from_numpy(np.asarray(feeds[name])) for name in self.inputs)).float().numpy()
