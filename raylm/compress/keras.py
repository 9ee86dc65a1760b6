"""Compression for the Keras backend with tensorflow-model-optimization, exported to TFLite.

    trained checkpoint ─► prune_low_magnitude + PolynomialDecay fine-tune ─► strip_pruning
                       ─► quantization-aware fine-tune ─► full-int8 TFLite ─► measure ─► ARTIFACT

Every variant (the dense parent, the pruned model, the int8 model) is converted to TFLite and
measured the same way from its file: accuracy on the validation split, size, gzip size (zeros only
pay off once compressed) and batch-1 latency in the LiteRT interpreter. The fine-tunes run in this
process on the run's Ray Data datasets; the models are small.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raylm.atomic import atomic_directory
from raylm.config import RaylmConfig
from raylm.data import MODEL_INPUTS

ARTIFACT_FORMAT = "raylm.artifact/1"
ARTIFACT_META = "artifact.json"
TFLITE_FILE = "model.tflite"


@dataclass
class KerasCompression:
    report: list[dict[str, Any]]  # one row per variant, the dense parent first
    artifact: Path  # the last variant's artifact directory
    sparsity: float  # measured on the stripped model's kernels (0 without pruning)


def _interpreter(model_path: str | os.PathLike[str]):
    """LiteRT's interpreter (tf.lite.Interpreter is deprecated); TF's own if ai-edge-litert is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the install
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


class TFLiteClassifier:
    """A TFLite model file run one sample at a time, (de)quantizing int8 inputs and outputs."""

    def __init__(self, model_path: str | os.PathLike[str]) -> None:
        self.interpreter = _interpreter(model_path)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]

    def _feed(self, sample: np.ndarray) -> None:
        x = sample[None].astype(np.float32)
        if self._input["dtype"] != np.float32:
            scale, zero = self._input["quantization"]
            info = np.iinfo(self._input["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self._input["dtype"])
        self.interpreter.set_tensor(self._input["index"], x)

    def _read(self) -> np.ndarray:
        y = self.interpreter.get_tensor(self._output["index"])[0]
        if self._output["dtype"] != np.float32:
            scale, zero = self._output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        rows = []
        for sample in inputs:
            self._feed(sample)
            self.interpreter.invoke()
            rows.append(self._read())
        return np.stack(rows)

    def latency_ms(self, sample: np.ndarray, runs: int = 200, warmup: int = 20) -> dict[str, float]:
        self._feed(sample)
        for _ in range(warmup):
            self.interpreter.invoke()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            self.interpreter.invoke()
            times.append((time.perf_counter() - started) * 1e3)
        return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95))}


def _to_tflite(model: Any, *, int8_calibration: np.ndarray | None = None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8_calibration is not None:
        # Full integer: int8 weights, activations, inputs and outputs; the representative samples
        # fix the ranges QAT did not learn (the input's).
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([sample[None].astype(np.float32)] for sample in int8_calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def pruning_schedule(sparsity: float, total_steps: int):
    """PolynomialDecay from 0 to ``sparsity``, reached two thirds into the fine-tune.

    tfmot only updates masks at ``begin_step + k * frequency <= end_step``; its default
    ``frequency=100`` never prunes a run shorter than 100 steps, so both come from the real count.
    """
    import tensorflow_model_optimization as tfmot

    if total_steps < 3:
        return tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=1)
    end_step = (2 * (total_steps - 1)) // 3
    frequency = max(1, end_step // 10)
    end_step -= end_step % frequency
    return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity,
                                                begin_step=0, end_step=end_step, frequency=frequency)


def _arrays(dataset, feature: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    rows = dataset if limit is None else dataset.limit(limit)
    for batch in rows.iter_batches(batch_size=256, batch_format="numpy"):
        xs.append(batch[feature])
        ys.append(batch["label"])
    if not xs:
        raise ValueError("data: the split is empty, nothing to fine-tune or evaluate on")
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def _copy(model: Any) -> Any:
    """tfmot's wrappers reuse the wrapped layers' variables: work on a copy to keep the parent intact."""
    from raylm.models.keras import keras_api

    clone = keras_api().models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def prune(model: Any, x: np.ndarray, y: np.ndarray, *, sparsity: float, epochs: int, batch_size: int, lr: float,
          seed: int = 0) -> Any:
    """Magnitude-prune a copy of ``model`` to ``sparsity`` while fine-tuning; returns it stripped."""
    import tensorflow_model_optimization as tfmot

    from raylm.models.keras import keras_api
    from raylm.train.keras_loop import compile_model

    keras = keras_api()
    keras.utils.set_random_seed(seed)
    total_steps = math.ceil(len(x) / batch_size) * epochs
    pruned = tfmot.sparsity.keras.prune_low_magnitude(_copy(model), pruning_schedule=pruning_schedule(sparsity, total_steps))
    compile_model(pruned, lr)
    pruned.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    return tfmot.sparsity.keras.strip_pruning(pruned)


_CONV1D_CONFIG = None


def _conv1d_quantize_config_class():
    """A ``QuantizeConfig`` for Conv1D (built on first use: it subclasses a tfmot class)."""
    global _CONV1D_CONFIG
    if _CONV1D_CONFIG is not None:
        return _CONV1D_CONFIG
    import tensorflow_model_optimization as tfmot
    # The weight quantizer tfmot's prune-preserving scheme uses for Dense (not exported publicly).
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve.\
        prune_preserve_quantize_registry import PrunePreserveDefault8BitWeightsQuantizer

    quantizers = tfmot.quantization.keras.quantizers

    class Conv1DQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """Conv1D: int8 kernel and activation. ``passthrough``: MaxPooling1D, whose int8 form keeps
        its input's scale, so there is nothing to learn."""

        def __init__(self, preserve_sparsity: bool = False, passthrough: bool = False) -> None:
            self.preserve_sparsity, self.passthrough = preserve_sparsity, passthrough
            self.weight_quantizer = (PrunePreserveDefault8BitWeightsQuantizer() if preserve_sparsity else
                                     quantizers.LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True,
                                                                   narrow_range=True))
            self.activation_quantizer = quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False,
                                                                          symmetric=False, narrow_range=False)

        def get_weights_and_quantizers(self, layer):
            return [] if self.passthrough else [(layer.kernel, self.weight_quantizer)]

        def get_activations_and_quantizers(self, layer):
            return [] if self.passthrough else [(layer.activation, self.activation_quantizer)]

        def set_quantize_weights(self, layer, quantize_weights):
            if not self.passthrough:
                layer.kernel = quantize_weights[0]

        def set_quantize_activations(self, layer, quantize_activations):
            if not self.passthrough:
                layer.activation = quantize_activations[0]

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {"preserve_sparsity": self.preserve_sparsity, "passthrough": self.passthrough}

    _CONV1D_CONFIG = Conv1DQuantizeConfig
    return _CONV1D_CONFIG


def quantization_aware(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, lr: float,
                       preserve_sparsity: bool, seed: int = 0) -> Any:
    """QAT fine-tune. A pruned model keeps its zeros (tfmot's prune-preserving scheme); plain
    ``quantize_model`` would let the fine-tune grow them back."""
    import tensorflow_model_optimization as tfmot

    from raylm.models.keras import keras_api
    from raylm.train.keras_loop import compile_model

    keras = keras_api()
    keras.utils.set_random_seed(seed)
    quantize = tfmot.quantization.keras
    conv1d_config = _conv1d_quantize_config_class()

    def annotate(layer):
        # tfmot's registries leave Conv1D and MaxPooling1D out; Conv1D gets what tfmot gives Dense.
        if isinstance(layer, keras.layers.Conv1D):
            return quantize.quantize_annotate_layer(layer, quantize_config=conv1d_config(preserve_sparsity))
        if isinstance(layer, keras.layers.MaxPooling1D):
            return quantize.quantize_annotate_layer(layer, quantize_config=conv1d_config(passthrough=True))
        return quantize.quantize_annotate_layer(layer)

    copy = _copy(model)
    annotated = quantize.quantize_annotate_model(
        keras.models.clone_model(copy, clone_function=annotate))
    annotated.set_weights(copy.get_weights())
    scheme = (tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme() if preserve_sparsity
              else quantize.default_8bit.Default8BitQuantizeScheme())
    with quantize.quantize_scope({conv1d_config.__name__: conv1d_config}):
        qat = quantize.quantize_apply(annotated, scheme)
    compile_model(qat, lr)
    qat.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    return qat


def measure_tflite(path: str | os.PathLike[str], x_val: np.ndarray, y_val: np.ndarray, *,
                   latency_runs: int = 200) -> tuple[dict[str, Any], np.ndarray]:
    """The report row of one TFLite file, computed from the file; also returns its logits."""
    data = Path(path).read_bytes()
    classifier = TFLiteClassifier(path)
    logits = classifier.logits(x_val)
    row = {
        "accuracy": float((logits.argmax(-1) == y_val).mean()),
        "size_bytes": len(data),
        "gzip_bytes": len(gzip.compress(data, compresslevel=9)),
        "latency_ms_batch1": classifier.latency_ms(x_val[0], runs=latency_runs),
        "input_dtype": np.dtype(classifier._input["dtype"]).name,
    }
    return row, logits


def _write_artifact(directory: Path, tflite: bytes, meta: dict[str, Any]) -> Path:
    from raylm.compress.artifact import checksums

    with atomic_directory(directory) as tmp:
        (tmp / TFLITE_FILE).write_bytes(tflite)
        (tmp / ARTIFACT_META).write_text(json.dumps(dict(meta, files=checksums(tmp)), indent=2))
    return directory


def _preprocessing(cfg: RaylmConfig) -> dict[str, Any]:
    if cfg.task.modality == "image":
        return {"modality": "image", **cfg.data.image.model_dump(), "layout": "NHWC", "range": [0, 1], "color": "RGB"}
    return {"modality": "audio", **cfg.data.audio.model_dump(), "frames": cfg.data.audio.frames}


def compress_keras_checkpoint(cfg: RaylmConfig, checkpoint: str | os.PathLike[str], *,
                              output_dir: str | os.PathLike[str] | None = None, latency_runs: int = 200) -> KerasCompression:
    """Prune / quantize the Keras model in ``checkpoint`` as ``cfg.compress`` says; write the artifact.

    ``cfg`` supplies the data and the recipe; the checkpoint must hold a model of ``cfg.model``.
    Artifacts go to ``output_dir`` (default ``<run dir>/compress/<variant>``).
    """
    from raylm.data import build_datasets
    from raylm.models.keras import kernel_sparsity
    from raylm.train.keras_loop import load_keras_checkpoint

    checkpoint = Path(checkpoint)
    loaded = load_keras_checkpoint(checkpoint)
    if (loaded.config.task.modality, loaded.config.model.name) != (cfg.task.modality, cfg.model.name):
        raise ValueError(f"checkpoint: holds {loaded.config.task.modality}/{loaded.config.model.name}, "
                         f"but the config says {cfg.task.modality}/{cfg.model.name}")
    cc, tc = cfg.compress, cfg.train
    # The same keys as the torch path: tfmot prunes weights by magnitude; any int8 mode means
    # quantization-aware training followed by a full-int8 TFLite conversion.
    if cc.prune.method == "structured":
        raise ValueError("compress.prune.method: structured pruning is not available for the keras backend "
                         "(tfmot prunes weights, not channels); use magnitude")
    target_sparsity = cc.prune.sparsity if cc.prune.method == "magnitude" else 0.0
    quantize = cc.quantize.mode != "none"
    if cc.finetune_epochs < 1 and (target_sparsity > 0 or quantize):
        raise ValueError("compress.finetune_epochs: pruning and quantization-aware training need at least 1 epoch")
    data = build_datasets(cfg)
    if data.labels != loaded.labels:
        raise ValueError(f"task.labels: the data's labels {data.labels} differ from the checkpoint's {loaded.labels}")
    (feature,) = MODEL_INPUTS[cfg.task.modality]
    x_train, y_train = _arrays(data.train, feature)
    x_val, y_val = _arrays(data.validation, feature)
    calibration = x_train[: cc.quantize.calibration_samples]

    work = Path(tempfile.mkdtemp(prefix="raylm-keras-compress-"))
    report: list[dict[str, Any]] = []
    model, sparsity = loaded.model, 0.0
    try:
        variants: list[tuple[str, bytes, Any]] = [("dense", _to_tflite(model), model)]
        if target_sparsity > 0:
            model = prune(model, x_train, y_train, sparsity=target_sparsity, epochs=cc.finetune_epochs,
                          batch_size=tc.batch_size, lr=tc.lr, seed=tc.seed)
            sparsity = kernel_sparsity(model)
            variants.append(("pruned", _to_tflite(model), model))
        if quantize:
            model = quantization_aware(model, x_train, y_train, epochs=cc.finetune_epochs, batch_size=tc.batch_size,
                                       lr=tc.lr, preserve_sparsity=target_sparsity > 0, seed=tc.seed)
            if target_sparsity > 0:
                sparsity = kernel_sparsity(model)
            variants.append(("int8", _to_tflite(model, int8_calibration=calibration), model))

        for name, tflite, keras_model in variants:
            path = work / f"{name}.tflite"
            path.write_bytes(tflite)
            row, logits = measure_tflite(path, x_val, y_val, latency_runs=latency_runs)
            keras_pred = np.asarray(keras_model(x_val, training=False)).argmax(-1)
            row = {"variant": name, **row,
                   "agreement_with_keras": float((logits.argmax(-1) == keras_pred).mean()),
                   "sparsity": sparsity if name != "dense" else kernel_sparsity(loaded.model)}
            report.append(row)
        base = report[0]
        for row in report:
            row["accuracy_delta"] = row["accuracy"] - base["accuracy"]
            row["size_ratio"] = row["size_bytes"] / base["size_bytes"]
            row["gzip_ratio"] = row["gzip_bytes"] / base["gzip_bytes"]
            row["latency_ratio"] = row["latency_ms_batch1"]["p50"] / base["latency_ms_batch1"]["p50"]
            row["validation_samples"] = len(y_val)

        final_name, final_tflite, _ = variants[-1]
        final_row = report[-1]
        meta = {
            "format": ARTIFACT_FORMAT,
            "backend": "keras",
            "task": {"modality": cfg.task.modality, "labels": loaded.labels},
            "preprocessing": _preprocessing(cfg),
            "model": {"name": cfg.model.name, "file": TFLITE_FILE, "runtime": "tflite", "outputs": "logits",
                      "input": feature, "input_dtype": final_row["input_dtype"],
                      "kwargs": cfg.model.kwargs},
            "recipe": {"variant": final_name, **cc.model_dump()},
            "lineage": {"parent_checkpoint": str(checkpoint.resolve()), "data_fingerprint": data.fingerprint,
                        "config_hash": hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16]},
            "report": final_row,
            "variants": report,
        }
        target = Path(output_dir) if output_dir is not None else cfg.run_dir / "compress" / f"keras-{final_name}"
        artifact = _write_artifact(target, final_tflite, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return KerasCompression(report, artifact, sparsity)


def load_tflite_artifact(directory: str | os.PathLike[str]) -> tuple[TFLiteClassifier, dict[str, Any]]:
    """A Keras artifact's runnable model and its ``artifact.json``."""
    from raylm.compress.artifact import confined, verify_files

    directory = Path(directory)
    try:
        meta = json.loads((directory / ARTIFACT_META).read_text())
    except FileNotFoundError:
        raise ValueError(f"{directory}: not a raylm artifact (no {ARTIFACT_META})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{directory}/{ARTIFACT_META}: corrupted ({type(err).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != ARTIFACT_FORMAT or meta.get("backend") != "keras" \
            or not isinstance(meta.get("model"), dict):
        found = (meta.get("format"), meta.get("backend")) if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{directory}: format {found!r}, expected {ARTIFACT_FORMAT!r}/'keras'")
    # The same checks as torch artifacts: every file listed with its sha256, all inside the directory.
    verify_files(directory, {"files": meta.get("files"), "model_file": meta["model"].get("file")})
    try:
        return TFLiteClassifier(confined(directory, meta["model"]["file"], "model.file")), meta
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"{directory}/{meta['model']['file']}: not a loadable TFLite model ({err})") from None
