"""TFLite conversion from a Keras model; the runner that loads the file is ``raylm.artifacts.tflite_runtime``."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_tflite(model: Any, *, int8_calibration: np.ndarray | None = None) -> bytes:
    """A Keras model as a TFLite flatbuffer; with calibration samples, full integer (int8 weights,
    activations, input and output; the samples fix the ranges QAT did not learn, the input's)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8_calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([sample[None].astype(np.float32)] for sample in int8_calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


# The runner moved to the artifacts layer (issue #26); importable from here for code written before.
from raylm.artifacts.tflite_runtime import TFLiteRunner, interpreter  # noqa: E402,F401
