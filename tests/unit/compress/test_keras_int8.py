"""compress.quantize.mode=static-selective on Keras: the convs-float int8 TFLite candidate keeps its
CONV_2D float and the rest int8, agrees with the Keras model, and the faster candidate is served."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


@pytest.fixture(scope="module")
def trained():
    """The Keras seed CNN fitted on images whose label is their brightest colour channel (learnable in seconds)."""
    from raylm.config import load_config
    from raylm.registry import MODELS
    import raylm.models.keras  # noqa: F401 (registers the Keras builders)

    from raylm.models.keras import keras_api

    cfg = load_config(None, ["task.modality=image", "model.backend=keras", "model.name=seed_cnn"])
    keras = keras_api()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((384, 32, 32, 3), dtype=np.float32) * 0.5
    y = rng.integers(0, 3, len(x))
    x[np.arange(len(x)), :, :, y] += 1.0
    model = MODELS.get("image", "seed_cnn", "keras")(cfg=cfg, num_classes=3)
    # The builders end in logits (as raylm's Keras loop trains them): a loss on probabilities never learns.
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    return cfg, model, x, y


def _ops(tflite: bytes) -> list[tuple[str, str]]:
    """(op name, dtype of its first input) per op."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=tflite)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [(op["op_name"], np.dtype(tensors[op["inputs"][0]]["dtype"]).name) for op in interpreter._get_ops_details()]


def test_convs_float_candidate_keeps_the_conv_float_and_the_dense_int8(trained):
    from raylm.artifacts.tflite_runtime import TFLiteRunner
    from raylm.compress.keras_int8 import int8_convs_float, narrow_convs
    from raylm.compress.tflite import to_tflite

    _, model, x, y = trained
    assert narrow_convs(model) == [model.layers[0].name]  # RGB: 3 x 3 x 3 = 27
    candidate = int8_convs_float(model, x[:64])
    ops = dict(_ops(candidate))
    assert ops["CONV_2D"] == "float32" and ops["FULLY_CONNECTED"] == "int8"
    assert len(candidate) <= 0.35 * len(to_tflite(model))  # the weights are in the Dense layer (7200 x 3)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "m.tflite").write_bytes(candidate)
        preds = TFLiteRunner(Path(tmp) / "m.tflite")(x[:128]).argmax(-1)
    keras_preds = np.asarray(model(x[:128], training=False)).argmax(-1)
    assert (keras_preds == y[:128]).mean() > 0.6  # chance: 1/3
    assert (preds == keras_preds).mean() >= 0.95
    assert (preds == y[:128]).mean() >= (keras_preds == y[:128]).mean() - 0.05


def test_the_faster_candidate_is_served_and_a_model_without_convs_keeps_full_int8(trained, monkeypatch):
    from raylm.compress import keras_int8
    from raylm.compress.tflite import to_tflite
    from raylm.models.keras import keras_api

    _, model, x, _ = trained
    full = to_tflite(model, int8_calibration=x[:64])
    name, served, timing = keras_int8.faster_int8(full, model, x[:64], batch_size=16)
    assert set(timing) == {"int8", "int8-convs-float"}
    faster = min(timing, key=timing.get)
    assert name == faster and (served == full) == (faster == "int8")

    keras = keras_api()
    mlp = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    mlp_full = to_tflite(mlp, int8_calibration=x[:16])
    assert keras_int8.faster_int8(mlp_full, mlp, x[:16], batch_size=16) == ("int8", mlp_full, {})
