"""The TFLite runtime: a runner that serving, evaluation and ``measure()`` call like any other
artifact's ``predict`` (a batch in, float logits out). Conversion is ``raylm.compress.tflite``.

Only LiteRT's interpreter is used; a full-int8 model's int8 input and output are (de)quantized
here with the scales the file records, so callers always see float32.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np


def interpreter(model_path: str | os.PathLike[str], threads: int = 1) -> Any:
    """LiteRT's interpreter (tf.lite.Interpreter is deprecated); TF's own if ai-edge-litert is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the install
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    runner = Interpreter(model_path=str(model_path), num_threads=threads)
    runner.allocate_tensors()
    return runner


class TFLiteRunner:
    """``runner(x) -> logits`` for a batch of any size: the input is resized to the batch on change
    (a Keras model converts with batch 1 and a free batch dimension). One call at a time: an
    interpreter is not thread-safe, and a Serve replica may run a batch and a lone request at once."""

    def __init__(self, model_path: str | os.PathLike[str], threads: int = 1) -> None:
        self.interpreter = interpreter(model_path, threads)
        self._lock = threading.Lock()
        self._details()

    def _details(self) -> None:
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]

    @property
    def input_dtype(self) -> str:
        return np.dtype(self._input["dtype"]).name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._run(np.asarray(x, dtype=np.float32))

    def _run(self, x: np.ndarray) -> np.ndarray:
        if tuple(self._input["shape"]) != x.shape:
            self.interpreter.resize_tensor_input(self._input["index"], list(x.shape))
            self.interpreter.allocate_tensors()
            self._details()
        if self._input["dtype"] != np.float32:
            scale, zero = self._input["quantization"]
            info = np.iinfo(self._input["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self._input["dtype"])
        self.interpreter.set_tensor(self._input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._output["index"])
        if self._output["dtype"] != np.float32:
            scale, zero = self._output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.array(y, dtype=np.float32)  # a copy: the interpreter reuses its output buffer


class TFLiteRuntime:
    """``Runtime`` over a TFLite file: a Keras model takes its one input positionally."""

    name = "tflite"

    def __init__(self, runner: TFLiteRunner, inputs: tuple[str, ...]) -> None:
        self.runner, self.inputs = runner, inputs

    def predict(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.runner(feeds[self.inputs[0]])
