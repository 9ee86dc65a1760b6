"""Compression for the Keras backend with tensorflow-model-optimization, exported to TFLite.

    trained checkpoint ─► prune_low_magnitude + PolynomialDecay fine-tune ─► strip_pruning
                       ─► quantization-aware fine-tune ─► full-int8 TFLite ─► measure ─► ARTIFACT

Every variant (the dense parent, the pruned model, the int8 model) is converted to TFLite and
measured from its file by the same ``measure()`` as torch artifacts: accuracy on the validation
split, size and gzip size, p50 at batch 1 and at ``compress.serving_batch_size``. The artifact is
the same ``artifact.json`` as torch's (``runtime: tflite``), so ``load_artifact`` serves it. The
fine-tunes run in this process on the run's Ray Data datasets; the models are small.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raylm.atomic import atomic_directory
from raylm.artifacts import TFLITE
from raylm.compress.methods import Exporter, Pruner, Quantizer, exporter, pruner, prunes, quantizer
from raylm.compress.prune import magnitude_tag
from raylm.compress.tflite import to_tflite
from raylm.config import RaylmConfig
from raylm.data import MODEL_INPUTS
from raylm.records import CompressReport, Measurement
from raylm.registry import COMPRESSION_METHODS


@dataclass
class KerasCompression:
    report: list[dict[str, object]]  # one Measurement per variant as artifact.json holds it, the dense parent first
    artifact: Path  # the last variant's artifact directory
    sparsity: float  # the served variant's kernels (the weights tfmot prunes), measured
    summary: dict[str, object]  # CompressReport.to_json(), the torch path's schema (also in artifact.json)


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


def _measure_file(path: Path, runner: Any, keras_model: Any, val: dict[str, np.ndarray], feature: str,
                  cfg: RaylmConfig) -> tuple[Measurement, np.ndarray]:
    """``measure()``'s row for one TFLite file, plus what only TFLite has (its input dtype, its agreement
    with the Keras model it was converted from); and its predictions."""
    from raylm.compress.measure import measure
    from raylm.models.keras import sparsity_stats

    recipe = cfg.compress
    keras_preds = np.asarray(keras_model(val[feature], training=False)).argmax(-1)
    row, preds = measure(lambda feeds: runner(feeds[feature]), val, (feature,), files=[path],
                         counts=sparsity_stats(keras_model), batch_sizes=(1, recipe.serving_batch_size),
                         runs=recipe.latency_runs, warmup=recipe.latency_warmup, threads=recipe.latency_threads)
    int8 = runner.input_dtype != "float32"
    row.runtime, row.input_dtype = "tflite-int8" if int8 else "tflite-fp32", runner.input_dtype
    row.agreement_with_keras = float((preds == keras_preds).mean())
    return row, preds


def _paired_ratio(candidate: Any, dense: Any, val: dict[str, np.ndarray], feature: str, recipe,
                  batch_size: int | None = None) -> float | None:
    """p50(candidate TFLite) / p50(float TFLite) at the serving batch, the two timed in alternation (as the
    torch path times against fp32 ONNX Runtime): measured apart, machine load flipped the gate's verdict
    (int8 3-8x the float p50 on a loaded machine, 0.73x on a quiet one, same command)."""
    if dense is None:
        return None
    from raylm.compress.measure import paired_latency_ratio

    return paired_latency_ratio(lambda feeds: candidate(feeds[feature]), lambda feeds: dense(feeds[feature]), val,
                                (feature,), batch_size or recipe.serving_batch_size, recipe.latency_runs,
                                recipe.latency_warmup)


def compress_keras_checkpoint(cfg: RaylmConfig, checkpoint: str | os.PathLike[str], *,
                              output_dir: str | os.PathLike[str] | None = None) -> KerasCompression:
    """Prune / quantize the Keras model in ``checkpoint`` as ``cfg.compress`` says; write the artifact.

    ``cfg`` supplies the data and the recipe; the checkpoint must hold a model of ``cfg.model``.
    Artifacts go to ``output_dir`` (default ``<run dir>/compress/<variant>``, as torch's).
    """
    from raylm.artifacts import load_artifact, preprocessing_record, write_meta
    from raylm.compress.gate import variant_ratios
    from raylm.compress.pipeline import CompressError, variant_name
    from raylm.artifacts.tflite_runtime import TFLiteRunner
    from raylm.data import build_datasets
    from raylm.train.keras_loop import load_keras_checkpoint

    checkpoint = Path(checkpoint).expanduser().resolve()
    loaded = load_keras_checkpoint(checkpoint)
    if (loaded.config.task.modality, loaded.config.model.name) != (cfg.task.modality, cfg.model.name):
        raise CompressError(f"model.name: checkpoint {checkpoint} holds {loaded.config.task.modality}/"
                            f"{loaded.config.model.name}, but the config says {cfg.task.modality}/{cfg.model.name}")
    recipe, training = cfg.compress, cfg.train
    # The same keys as the torch path, looked up among the keras methods (the config refuses the others).
    prune_method, int8_method, export = pruner(recipe, "keras"), quantizer(recipe, "keras"), exporter(recipe, "keras")
    target_sparsity = recipe.prune.sparsity if prunes(recipe, "keras") else 0.0
    lr = recipe.finetune_lr or training.lr / 10
    variant = variant_name(cfg)
    data = build_datasets(cfg)
    if list(data.labels) != list(loaded.labels):
        raise CompressError(f"task.labels: the data's labels {data.labels} differ from the checkpoint's {loaded.labels}")
    (feature,) = MODEL_INPUTS[cfg.task.modality]
    x_train, y_train = _arrays(data.train, feature)
    x_val, y_val = _arrays(data.validation, feature, recipe.max_eval_samples or None)
    val = {feature: x_val, "label": y_val}
    calibration = x_train[: recipe.quantize.calibration_samples]

    model = loaded.model
    variants: list[tuple[str, bytes, Any]] = [("dense", export.write(model), model)]
    if target_sparsity > 0:
        model = prune_method.apply(model, x_train, y_train, sparsity=target_sparsity, epochs=recipe.finetune_epochs,
                                   batch_size=training.batch_size, lr=lr, seed=training.seed)
        variants.append(("pruned", export.write(model), model))
    if int8_method is not None:
        float_model = model
        if recipe.finetune_epochs:
            model = int8_method.apply(model, x_train, y_train, epochs=recipe.finetune_epochs, batch_size=training.batch_size,
                                      lr=lr, preserve_sparsity=target_sparsity > 0, seed=training.seed)
        name, int8_file = "int8", export.write(model, int8_calibration=calibration)
        if recipe.quantize.mode == "static-selective":  # the faster of full int8 and its convs kept float
            from raylm.compress.keras_int8 import faster_int8

            name, int8_file, _ = faster_int8(int8_file, float_model, calibration, recipe.serving_batch_size,
                                             recipe.latency_threads)
            model = model if name == "int8" else float_model
        variants.append((name, int8_file, model))

    final = Path(output_dir) if output_dir is not None else cfg.run_dir / "compress" / variant
    rows: list[Measurement] = []
    dense_preds, dense_runner = None, None
    with tempfile.TemporaryDirectory(prefix="raylm-keras-compress-") as work, atomic_directory(final) as tmp:
        *intermediate, (last_name, last_tflite, last_model) = variants
        for name, tflite, keras_model in intermediate:
            path = Path(work) / f"{name}.tflite"
            path.write_bytes(tflite)
            runner = TFLiteRunner(path, recipe.latency_threads)
            row, preds = _measure_file(path, runner, keras_model, val, feature, cfg)
            if name == "dense":
                dense_preds, dense_runner = preds, runner
            row.variant = name
            rows.append(row)
        (tmp / export.model_file).write_bytes(last_tflite)
        meta = {
            "task": {"modality": cfg.task.modality}, "labels": list(loaded.labels), "inputs": [feature],
            "preprocessing": preprocessing_record(cfg),
            "architecture": {"backend": "keras", "name": cfg.model.name, "kwargs": cfg.model.kwargs,
                             "num_classes": len(loaded.labels), "config": cfg.to_dict()},
            "model_file": export.model_file, "runtime": "tflite",
            "recipe": recipe.model_dump(mode="json") | {"variant": variant, "export": "tflite"},
            "lineage": {"parent_checkpoint": str(checkpoint), "parent_epoch": loaded.meta.get("epoch"),
                        "parent_metrics": loaded.meta.get("metrics", {}), "data_fingerprint": data.fingerprint,
                        "config_hash": hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16]},
        }
        write_meta(tmp, meta)
        # The artifact's own file is measured as serving loads it.
        artifact = load_artifact(tmp, threads=recipe.latency_threads)
        row, preds = _measure_file(tmp / export.model_file, artifact.tflite, last_model, val, feature, cfg)
        row.variant = last_name
        rows.append(row)
        if intermediate:
            rows[-1].agreement_with_dense = float((preds == dense_preds).mean())
        dense, compressed = rows[0], rows[-1]
        ratios = variant_ratios(dense, compressed, recipe, compresses=len(variants) > 1,
                                paired_latency_ratio=_paired_ratio(artifact.tflite, dense_runner, val, feature, recipe))
        # The same alternation at batch 1, as the torch report has it.
        ratios.paired_latency_ratio_b1 = _paired_ratio(artifact.tflite, dense_runner, val, feature, recipe, 1)
        parity_rows = x_val[:256]
        reloaded = artifact.predict({feature: parity_rows})
        in_memory = np.asarray(last_model(parity_rows, training=False))
        parity = {"rows": len(parity_rows), "max_abs_diff": float(np.abs(reloaded - in_memory).max()),
                  "top1_agreement": float((reloaded.argmax(-1) == in_memory.argmax(-1)).mean()), "passed": True}
        summary = CompressReport(variant=variant, modality=cfg.task.modality, model=cfg.model.name, artifact=str(final),
                                 dense=dense, compressed=compressed, parity=parity, ratios=ratios, variants=rows).to_json()
        meta["report"] = summary
        write_meta(tmp, meta)
    return KerasCompression([row.model_dump(mode="json", exclude_none=True) for row in rows], final, rows[-1].sparsity,
                            summary)


# tfmot prunes while it fine-tunes, and any int8 mode is quantization-aware training and a full-int8
# TFLite model (tfmot has one int8 scheme); static-selective also converts the model with its convs
# float and serves the faster (raylm.compress.keras_int8). Declared in raylm.registry for the config.
COMPRESSION_METHODS.register("prune", "magnitude", "keras")(Pruner(tag=magnitude_tag, apply=prune))
for _mode in ("static", "static-selective"):
    COMPRESSION_METHODS.register("quantize", _mode, "keras")(
        Quantizer(apply=quantization_aware, calibrated=True))
COMPRESSION_METHODS.register("export", "tflite", "keras")(Exporter(
    model_file=TFLITE, runtimes=("tflite-fp32", "tflite-int8"), write=to_tflite))
