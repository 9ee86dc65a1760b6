"""The article's Keras models, registered beside the torch ones under the same names (backend ``keras``).

TensorFlow is imported inside the builders only: registering them costs nothing, so ``import
raylm`` and a torch job never load TensorFlow. The models are Keras 2 (``tf_keras``) because
tensorflow-model-optimization does not support Keras 3. Like the torch models they return logits
(the article's final softmax is folded into the loss), so both backends' artifacts mean the same.
"""

from __future__ import annotations

import os
from typing import Any

from raylm.registry import MODELS


def keras_api() -> Any:
    """The ``tf_keras`` module, with ``TF_USE_LEGACY_KERAS=1`` set first so ``tf.keras`` agrees with it."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras

    return tf_keras


def _input_shape(cfg) -> tuple[int, ...]:
    return getattr(cfg.data, cfg.task.modality).sample_shape  # the data section of task.modality


def _sequential(name: str, input_shape: tuple[int, ...], layers: list) -> Any:
    keras = keras_api()
    return keras.Sequential([keras.Input(shape=input_shape, name="input"), *layers], name=name)


@MODELS.register("image", "seed_mlp", "keras")
@MODELS.register("audio", "seed_mlp", "keras")
def build_seed_mlp(*, cfg, num_classes: int, load_pretrained: bool = True, hidden: list[int] = (128, 64)) -> Any:
    """The article's Dense model: Dense(128, relu) -> Dense(64, relu) -> Dense(classes), on flattened input."""
    keras = keras_api()
    layers = [keras.layers.Flatten()]
    layers += [keras.layers.Dense(width, activation="relu") for width in hidden]
    layers.append(keras.layers.Dense(num_classes, name="logits"))
    return _sequential("seed_mlp", _input_shape(cfg), layers)


@MODELS.register("image", "seed_cnn", "keras")
def build_seed_cnn(*, cfg, num_classes: int, load_pretrained: bool = True, channels: int = 32) -> Any:
    """The article's CNN: Conv2D(32, 3x3, relu) on 32x32x3 -> MaxPooling2D(2) -> Flatten -> Dense(classes)."""
    keras = keras_api()
    return _sequential("seed_cnn", _input_shape(cfg), [
        keras.layers.Conv2D(channels, (3, 3), activation="relu"),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(num_classes, name="logits"),
    ])


@MODELS.register("audio", "seed_conv1d", "keras")
def build_seed_conv1d(*, cfg, num_classes: int, load_pretrained: bool = True, channels: int = 32) -> Any:
    """The article's Conv1D over 22-dim frames -> MaxPooling1D(2) -> Flatten -> Dense(classes).

    The article writes ``kernel_size=(3, 3)`` and ``input_shape=(None, 22)``; a Conv1D kernel is
    one number and Flatten needs a known length, so the kernel is 3 and the frame count is the
    one the audio pipeline produces (``data.audio.frames``).
    """
    keras = keras_api()
    return _sequential("seed_conv1d", _input_shape(cfg), [
        keras.layers.Conv1D(channels, 3, activation="relu"),
        keras.layers.MaxPooling1D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(num_classes, name="logits"),
    ])


def kernel_sparsity(model: Any) -> float:
    """Fraction of zeros over the Dense/Conv kernels (the weights tfmot prunes; biases are not).

    Read from the variables, not ``layer.kernel``: inside a QAT wrapper that is a fake-quant tensor.
    """
    import numpy as np

    zeros = total = 0
    for weight in model.weights:
        if weight.name.split("/")[-1].startswith("kernel"):
            values = np.asarray(weight.numpy())
            zeros += int((values == 0).sum())
            total += values.size
    return zeros / max(total, 1)


def sparsity_stats(model: Any) -> dict[str, float]:
    """The keys of torch's ``sparsity_stats``: parameter counts over the trainable variables, and the
    sparsity of the kernels (the weights tfmot prunes) and overall."""
    import numpy as np

    values = [np.asarray(w.numpy()) for w in model.trainable_weights]
    params = int(sum(v.size for v in values))
    nonzero = int(sum(np.count_nonzero(v) for v in values))
    return {"params": params, "nonzero_params": nonzero, "sparsity": kernel_sparsity(model),
            "overall_sparsity": 1 - nonzero / max(params, 1)}
