"""Keras int8 TFLite worth serving: two int8 candidates, the faster on a calibration batch kept.

The torch path's ``static-selective`` for TFLite. Full integer TFLite (tfmot QAT, int8 I/O,
``TFLITE_BUILTINS_INT8``) is the smallest file, but every convolution of the Keras models reads few
inputs per output (the seed CNN's RGB conv: 3x3x3 = 27; the seed Conv1D over 22 MFCCs: 66), and
for so little work LiteRT's int8 conv kernels (XNNPACK QS8 or ruy) pack and requantize for longer
than the float kernel computes: ``benchmarks/tflite_int8.py`` measured the all-int8 seed CNN at
1.35x the float TFLite p50 at batch 1 (AVX512-VNNI CPU), everything but the conv int8 at 0.97-1.04x.

So when the model has a narrow convolution (``C_in * kernel < NARROW_REDUCTION``, as the torch
path), a second candidate is converted: post-training int8 of the float (pruned) model with every
CONV_2D left float (``QuantizationDebugger``'s denylist; TFLite lowers Conv1D to CONV_2D; tfmot's
QAT models have no debug mode, so this candidate is calibrated, not quantization-aware). Its size
is nearly the same: the weights are in the Dense layer. Both are timed in alternation on one
calibration batch at the serving batch size (lower quartile, as ``static_int8._paired_ms``) and the
faster is kept; the report then times the served file paired against the float TFLite model.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def narrow_convs(model: Any) -> list[str]:
    """The Keras Conv1D / Conv2D layers whose reduction ``C_in * prod(kernel)`` is narrow."""
    from raylm.compress.static_int8 import NARROW_REDUCTION
    from raylm.models.keras import keras_api

    keras = keras_api()
    convs = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D))]
    return [layer.name for layer in convs
            if int(layer.input_shape[-1]) * int(np.prod(layer.kernel_size)) < NARROW_REDUCTION]


def int8_convs_float(model: Any, calibration: np.ndarray) -> bytes:
    """Post-training int8 TFLite of a float Keras model (per-channel weights, calibrated on
    ``calibration``) with every CONV_2D kept float; float input and output."""
    import tensorflow as tf

    def samples():
        return ([sample[None].astype(np.float32)] for sample in calibration)

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([s[None].astype(np.float32)] for s in calibration[:4]),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=["CONV_2D"]))
    return debugger.get_nondebug_quantized_model()


def paired_ms(files: list[bytes], x: np.ndarray, runs: int = 100, threads: int = 1) -> list[float]:
    """Lower-quartile ms of each TFLite file on ``x``, timed in rotation (load falls on all alike)."""
    from raylm.artifacts.tflite_runtime import TFLiteRunner

    with tempfile.TemporaryDirectory(prefix="raylm-tflite-int8-") as tmp:
        runners = []
        for i, data in enumerate(files):
            path = Path(tmp) / f"{i}.tflite"
            path.write_bytes(data)
            runners.append(TFLiteRunner(path, threads))
        for runner in runners:
            for _ in range(5):
                runner(x)
        times: list[list[float]] = [[] for _ in runners]
        for i in range(runs):
            for k in (range(len(runners)) if i % 2 == 0 else reversed(range(len(runners)))):
                started = time.perf_counter()
                runners[k](x)
                times[k].append(time.perf_counter() - started)
    return [float(np.percentile(t, 25) * 1000) for t in times]


def faster_int8(full_int8: bytes, float_model: Any, calibration: np.ndarray, batch_size: int,
                threads: int = 1) -> tuple[str, bytes, dict[str, float]]:
    """``("int8", full_int8, {})``, or the convs-float candidate when the model has a narrow conv and
    that file is faster on a calibration batch: ``(name, file, {candidate: ms})``."""
    if not narrow_convs(float_model):
        return "int8", full_int8, {}
    convs_float = int8_convs_float(float_model, calibration)
    batch = calibration[:batch_size]
    ms = paired_ms([full_int8, convs_float], batch, threads=threads)
    timing = {"int8": round(ms[0], 4), "int8-convs-float": round(ms[1], 4)}
    log.info("keras int8: ms per calibration batch of %d: %s", len(batch), timing)
    if ms[1] < ms[0]:
        return "int8-convs-float", convs_float, timing
    return "int8", full_int8, timing
