"""``compress(cfg, checkpoint)``: prune -> fine-tune -> export -> quantize -> measure -> gate -> ARTIFACT.

Each step looks its method up by name (``raylm.compress.methods``): the pruner of
``compress.prune.method``, the quantizer of ``compress.quantize.mode``, the exporter of ``compress.export``.
"""

from __future__ import annotations

import hashlib
import logging
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raylm.atomic import atomic_directory
from raylm.artifacts import load_artifact, preprocessing_record, write_meta
from raylm.compress.methods import compresses, distills, export_name, exporter, pruner, prunes, quantizer
from raylm.config import CompressConfig, QuantizeConfig, RaylmConfig
from raylm.data import MODEL_INPUTS
from raylm.errors import RaylmError
from raylm.records import CompressReport

log = logging.getLogger(__name__)


class CompressError(RaylmError):
    """Compression cannot run or its result failed a check; the message names the field or file."""


def compress_config(checkpoint: str | Path, config: str | Path | None, overrides: list[str]) -> RaylmConfig:
    """``--config`` plus overrides; without ``--config``, the checkpoint's own training config. Either way
    checked against the checkpoint's ``raylm.json`` (read from storage for a URI) before Ray starts."""
    from urllib.parse import urlsplit

    from raylm.config import ConfigError, load_config
    from raylm.storage import StoragePath, is_uri
    from raylm.train.checkpoint import CheckpointError, read_stored_meta

    cfg = load_config(config, overrides) if config is not None else None
    # A URI stays a StoragePath, never a local Path (one turned s3://bucket into a local folder named "s3:").
    where = StoragePath.of(checkpoint, cfg.train.storage_options if cfg is not None and is_uri(checkpoint) else None)
    try:
        meta = read_stored_meta(where)
    except CheckpointError as err:
        raise CompressError(f"--checkpoint: {err}") from None
    # The artifact belongs beside the checkpoint's run, wherever the checkpoint is now: not in a new run named
    # after --config, nor in the run its raylm.json recorded (a copied checkpoint wrote into the original's
    # run, which may be another user's). <storage>/<run>/train/checkpoint_* gives both; a checkpoint outside
    # that layout, its own folder's parent. Overrides that name them win.
    run = where.parent.parent if where.parent.name == "train" else where.parent
    named = any(o.split("=", 1)[0].strip() in ("train.name", "train.storage_path") for o in overrides)
    location = ({"train.storage_path": run.parent.uri, "train.name": run.name}
                if not named and (where.is_local or urlsplit(run.uri).path.strip("/")) else {})
    if cfg is not None:
        cfg = cfg.override(location) if location else cfg
        _refuse_another_model(cfg, _model_fields(meta["config"]), checkpoint)
        return cfg
    try:
        cfg = RaylmConfig.from_saved(meta["config"], labels=meta["labels"], changes=overrides)
    except ConfigError as err:  # e.g. the training data moved: name it, and the way out
        raise ConfigError(f"{err}\n  (the checkpoint's own config was used: pass --config or data.path=...)") from None
    return cfg.override(location) if location else cfg


def _model_fields(config: dict[str, Any]) -> dict[str, Any]:
    """What decides a checkpoint's architecture, from a saved config (``raylm.json``'s)."""
    task, model = config.get("task") or {}, config.get("model") or {}
    return {"task.modality": task.get("modality"), "model.name": model.get("name"),
            "model.backend": model.get("backend", "torch"), "model.kwargs": model.get("kwargs") or {}}


def _refuse_another_model(cfg: RaylmConfig, trained: dict[str, Any], checkpoint: str | Path) -> None:
    """--config's model against the one the checkpoint was trained as: refused before Ray starts (the
    weights were refused only at their load, after Ray's start, with a run directory made for nothing)."""
    mine = {"task.modality": cfg.task.modality, "model.name": cfg.model.name, "model.backend": cfg.model.backend,
            "model.kwargs": dict(cfg.model.kwargs)}
    for field, theirs in trained.items():
        if mine[field] != theirs:
            raise CompressError(f"{field}: the config says {mine[field]!r} but checkpoint {checkpoint} was trained "
                                f"with {theirs!r}; drop --config to compress with the checkpoint's own config, "
                                f"or set {field}={theirs!r}")


def variant_name(cfg: RaylmConfig) -> str:
    recipe = cfg.compress
    if recipe.variant:
        return recipe.variant
    parts = [f"vocab{recipe.vocabulary}"] if recipe.vocabulary != "full" else []
    if distills(recipe, cfg.model.backend):
        from raylm.compress.distill import distill_tag

        parts.append(distill_tag(recipe.distill, cfg.task.modality))
    if prunes(recipe, cfg.model.backend):
        parts.append(pruner(recipe, cfg.model.backend).tag(recipe.prune))
        if recipe.finetune_epochs:
            parts.append(f"ft{recipe.finetune_epochs}")
    parts.append(f"int8-{recipe.quantize.mode}" if recipe.quantize.mode != "none" else "fp32")
    return "-".join(parts)


def _matched_config(cfg: RaylmConfig, checkpoint: Path, loaded) -> RaylmConfig:
    """``cfg`` with the checkpoint's model section and tokenizer, after checking they agree."""
    trained = loaded.config
    _refuse_another_model(cfg, _model_fields(trained.to_dict()), checkpoint)
    if cfg.task.labels is not None and list(cfg.task.labels) != list(loaded.labels):
        raise CompressError(f"task.labels: {cfg.task.labels} differ from the checkpoint's {loaded.labels}")
    # The preprocessing the model was trained with wins: a different image size or MFCC
    # setting would silently feed it other inputs.
    changes = {"model": trained.to_dict()["model"], "data.image": trained.data.image.model_dump(mode="json"),
               "data.audio": trained.data.audio.model_dump(mode="json"), "data.text.max_length": trained.data.text.max_length}
    if trained.data.text.tokenizer:
        changes["data.text.tokenizer"] = trained.data.text.tokenizer
    return cfg.override(changes)


def _torch_predict(model: torch.nn.Module, inputs: tuple[str, ...]):
    def predict(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return model(*(torch.from_numpy(feeds[name]) for name in inputs)).float().numpy()
    return predict


def _copy_text_files(checkpoint: Path, directory: Path) -> None:
    for name in ("tokenizer", "hf_config"):
        if (checkpoint / name).is_dir():
            shutil.copytree(checkpoint / name, directory / name)


@dataclass
class _Rows:
    """The validation rows every variant is measured on, and the inputs the model takes."""

    val: dict[str, np.ndarray]
    inputs: tuple[str, ...]

    def example(self) -> dict[str, np.ndarray]:
        return {name: self.val[name][:2] for name in self.inputs}

    def parity(self) -> dict[str, np.ndarray]:
        return self.val if len(self.val["label"]) <= 256 else {k: v[:256] for k, v in self.val.items()}


def _timing(recipe) -> dict[str, Any]:
    return dict(batch_sizes=(1, recipe.serving_batch_size), runs=recipe.latency_runs, warmup=recipe.latency_warmup,
                threads=recipe.latency_threads)


def _measure_dense(recipe, dense_model: torch.nn.Module, rows: _Rows):
    """The reference runs on the fastest runtime raylm has for it (fp32 ONNX Runtime, 0.2-0.4x eager
    torch's p50 here), so what a candidate gains is the compression's, not the runtime's."""
    from raylm.artifacts.onnx_runtime import onnx_predictor
    from raylm.compress.measure import measure
    from raylm.compress.prune import sparsity_stats
    from raylm.compress.quantize import export_onnx

    with tempfile.TemporaryDirectory() as scratch:
        dense_onnx = export_onnx(dense_model, rows.example(), Path(scratch) / "dense.onnx")
        dense_predict = onnx_predictor(dense_onnx, recipe.latency_threads)
        dense, dense_preds = measure(dense_predict, rows.val, rows.inputs, files=[dense_onnx],
                                     counts=sparsity_stats(dense_model), **_timing(recipe))
    dense.runtime = "onnx-fp32"
    return dense, dense_preds, dense_predict


def _shrink_vocabulary(cfg: RaylmConfig, teacher: torch.nn.Module, train, rows: _Rows) -> torch.nn.Module:
    """``compress.vocabulary=train``: a copy of ``teacher`` over the training split's tokens (raylm.compress.vocabulary);
    its logits on the training rows are the teacher's, so a student distilled from it learns the same targets."""
    if cfg.compress.vocabulary == "full":
        return teacher
    from raylm.compress.measure import collect
    from raylm.compress.vocabulary import shrink_vocabulary, used_token_ids
    from raylm.hf_sources import load_tokenizer, tokenizer_source

    tokenizer = load_tokenizer(tokenizer_source(cfg))
    train_ids = collect(train, ("input_ids",))["input_ids"]
    # What the accuracy below cannot show: a validation split drawn like the training one uses (almost) only
    # the kept ids, while served text with other words reads [UNK] there (a user's new sentences: 5 of 9 right,
    # the dense model 9 of 9, at "-0.00 pts"). Said with the share of validation tokens it does cover.
    keep = used_token_ids(np.asarray(train_ids), list(tokenizer.all_special_ids))
    kept = keep.numpy()
    val_ids = np.asarray(rows.val["input_ids"])
    outside = float(np.mean(~np.isin(val_ids, kept))) if val_ids.size else 0.0
    log.warning("compress.vocabulary=train keeps %d of %d token ids (the training split's); %.1f %% of the validation "
                "split's tokens are outside them, so its accuracy cannot show what text with other words loses (they "
                "read [UNK]): keep compress.vocabulary=full where served text is not like the training text",
                len(kept), tokenizer.vocab_size, 100 * outside)
    return shrink_vocabulary(teacher, train_ids, tokenizer, keep)


def _distill(cfg: RaylmConfig, teacher: torch.nn.Module, train, rows: _Rows, num_classes: int) -> torch.nn.Module:
    """A copy of ``teacher``, or with ``compress.distill`` a smaller student trained on its logits (raylm.compress.distill)."""
    from raylm.compress.measure import collect
    from raylm.registry import COMPRESSION_METHODS

    distillation, backend = cfg.compress.distill, cfg.model.backend
    train_rows = collect(train, rows.inputs + ("label",)) if distills(cfg.compress, backend) else {}
    example = tuple(torch.from_numpy(v) for v in rows.example().values())
    return COMPRESSION_METHODS.get("distill", distillation.method, backend).apply(
        teacher, distillation, train_rows, rows.inputs, example, num_classes, batch_size=cfg.train.batch_size,
        lr=distillation.lr or cfg.train.lr, seed=cfg.train.seed)


def _prune(cfg: RaylmConfig, model: torch.nn.Module, rows: _Rows, num_classes: int) -> torch.nn.Module:
    example = tuple(torch.from_numpy(v) for v in rows.example().values())
    return pruner(cfg.compress, cfg.model.backend).apply(model, cfg.compress, example, num_classes)


def _finetune(cfg: RaylmConfig, model: torch.nn.Module, variant: str) -> torch.nn.Module:
    if cfg.compress.finetune_epochs and prunes(cfg.compress, cfg.model.backend):
        from raylm.compress.finetune import finetune

        model = finetune(cfg, model, variant)
    return model.eval()


def _calibration(quantize: QuantizeConfig, train, inputs: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
    from raylm.compress.measure import collect

    calib = collect(train, inputs, quantize.calibration_samples)
    return [{n: calib[n][i:i + 16] for n in inputs} for i in range(0, len(calib[inputs[0]]), 16)]


def _export(cfg: RaylmConfig, model: torch.nn.Module, rows: _Rows, directory: Path, train,
            in_memory: np.ndarray) -> tuple[str, dict[str, Any]]:
    """Write the model file into ``directory`` (quantized when a quantizer is set); returns its name
    and the parity of the fp32 export (when the exporter can read it back), before int8 changes numbers."""
    recipe, backend = cfg.compress, cfg.model.backend
    export, int8 = exporter(recipe, backend), quantizer(recipe, backend)
    out = directory / export.model_file
    fp32 = out if int8 is None else Path(tempfile.mkdtemp(dir=directory)) / f"fp32-{export.model_file}"
    export.write(model, rows.example(), fp32)
    parity: dict[str, Any] = {"atol": recipe.parity_atol, "rows": int(len(rows.parity()["label"]))}
    if export.reader is not None:
        exported = export.reader(fp32, 1)(rows.parity())
        parity[f"fp32_{export_name(recipe, backend)}_max_abs_diff"] = float(np.abs(exported - in_memory).max())
    if int8 is not None:
        int8.apply(fp32, out, recipe.quantize, _calibration(recipe.quantize, train, rows.inputs) if int8.calibrated else [])
        shutil.rmtree(fp32.parent)
    if export.shrink is not None:  # sparse layouts compound with int8 too
        parity |= export.shrink(out, recipe, rows.parity())
    return export.model_file, parity


def _check_parity(recipe: CompressConfig, variant: str, parity: dict[str, Any], reloaded: np.ndarray,
                  in_memory: np.ndarray) -> dict[str, Any]:
    """The reloaded artifact against the in-memory model; an int8 one is checked by its fp32 export."""
    parity["max_abs_diff"] = float(np.abs(reloaded - in_memory).max())
    parity["top1_agreement"] = float((reloaded.argmax(-1) == in_memory.argmax(-1)).mean())
    fp32_diffs = [v for k, v in parity.items() if k.startswith("fp32_")]
    checked = parity["max_abs_diff"] if recipe.quantize.mode == "none" else max(fp32_diffs, default=0.0)
    parity["passed"] = checked <= recipe.parity_atol
    if not parity["passed"]:
        raise CompressError(f"parity check failed for {variant}: exported model differs from the in-memory one "
                            f"by more than compress.parity_atol={recipe.parity_atol}: {parity}")
    return parity


def _meta(cfg: RaylmConfig, checkpoint: Path, loaded, model: torch.nn.Module, model_file: str, variant: str,
          fingerprint: str) -> dict[str, Any]:
    recipe = cfg.compress
    labels = list(loaded.labels)
    return {
        "task": {"modality": cfg.task.modality}, "labels": labels, "inputs": list(MODEL_INPUTS[cfg.task.modality]),
        "preprocessing": preprocessing_record(cfg),
        "architecture": {"backend": cfg.model.backend, "name": cfg.model.name, "kwargs": cfg.model.kwargs,
                         "num_classes": len(labels), "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
                         "config": cfg.to_dict()},
        "model_file": model_file,
        "recipe": recipe.model_dump(mode="json") | {"variant": variant, "export": export_name(recipe, cfg.model.backend)},
        "lineage": {"parent_checkpoint": str(checkpoint), "parent_epoch": loaded.meta.get("epoch"),
                    "parent_metrics": loaded.meta.get("metrics", {}), "data_fingerprint": fingerprint,
                    "config_hash": hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16]},
    }


def compress(cfg: RaylmConfig, checkpoint: str | Path, *, verbose: bool = True) -> dict[str, object]:
    """:func:`compress_report` as JSON, as the artifact's ``artifact.json`` holds it (scripts index it)."""
    return compress_report(cfg, checkpoint, verbose=verbose).to_json()


def compress_report(cfg: RaylmConfig, checkpoint: str | Path, *, verbose: bool = True) -> CompressReport:
    """Compress a trained checkpoint as ``cfg.compress`` says; write ``<run_dir>/compress/<variant>/``.

    Returns the report (also stored in the artifact): the dense parent and the variant
    measured on the same validation rows, their ratios and the parity check.
    """
    from raylm.data import decode_splits
    from raylm.data.decoded import shared_for, sharing
    from raylm.runtime import ensure_ray, quiet_data_progress
    from raylm.train.checkpoint import CheckpointError, load_checkpoint

    checkpoint = Path(checkpoint).expanduser().resolve()
    try:
        loaded = load_checkpoint(checkpoint)
    except CheckpointError as err:
        raise CompressError(f"--checkpoint: {err}") from None
    cfg = _matched_config(cfg, checkpoint, loaded)
    variant = variant_name(cfg)

    ensure_ray()
    quiet_data_progress()
    # Decoded once for the whole command: the fine-tune's trainer starts from the same splits (it decoded
    # them again, ~1-3 s and a second data check); inside a sweep's trial they are the sweep's already.
    decoded = shared_for(cfg) or decode_splits(cfg)
    with sharing(decoded):
        return _compressed_and_measured(cfg, checkpoint, loaded, variant, verbose)


def _compressed_and_measured(cfg: RaylmConfig, checkpoint: Path, loaded, variant: str, verbose: bool) -> CompressReport:
    from raylm.compress.gate import variant_ratios
    from raylm.compress.measure import collect, format_table, measure, paired_latency_ratio
    from raylm.compress.prune import sparsity_stats
    from raylm.data import build_datasets

    recipe = cfg.compress
    data = build_datasets(cfg)
    if list(data.labels) != list(loaded.labels):
        raise CompressError(f"task.labels: the data's labels {data.labels} differ from the checkpoint's {loaded.labels}")
    inputs = MODEL_INPUTS[cfg.task.modality]
    rows = _Rows(collect(data.validation, inputs + ("label",), recipe.max_eval_samples), inputs)
    dense, dense_preds, dense_predict = _measure_dense(recipe, loaded.model, rows)

    model = _shrink_vocabulary(cfg, loaded.model, data.train, rows)
    model = _distill(cfg, model, data.train, rows, len(loaded.labels))  # a copy when not distilling
    model = _prune(cfg, model, rows, len(loaded.labels))
    model = _finetune(cfg, model, variant)
    counts = sparsity_stats(model)
    in_memory = _torch_predict(model, inputs)(rows.parity())
    final = cfg.run_dir / "compress" / variant
    with atomic_directory(final) as tmp:
        _copy_text_files(checkpoint, tmp)
        model_file, parity = _export(cfg, model, rows, tmp, data.train, in_memory)
        meta = _meta(cfg, checkpoint, loaded, model, model_file, variant, data.fingerprint)
        write_meta(tmp, meta)
        # The report is measured on the exported file, reloaded as serving will load it.
        artifact = load_artifact(tmp, threads=recipe.latency_threads)
        parity = _check_parity(recipe, variant, parity, artifact.predict(rows.parity()), in_memory)
        compressed, preds = measure(artifact.predict, rows.val, inputs, files=artifact.weight_files, counts=counts,
                                    **_timing(recipe))
        compressed.agreement_with_dense = float((preds == dense_preds).mean())
        compressed.runtime = exporter(recipe, cfg.model.backend).runtimes[recipe.quantize.mode != "none"]
        paired = paired_latency_ratio(artifact.predict, dense_predict, rows.val, inputs, recipe.serving_batch_size,
                                      recipe.latency_runs, recipe.latency_warmup)
        ratios = variant_ratios(dense, compressed, recipe, paired_latency_ratio=paired,
                                compresses=compresses(recipe, cfg.model.backend))
        ratios.paired_latency_ratio_b1 = paired_latency_ratio(artifact.predict, dense_predict, rows.val, inputs, 1,
                                                              recipe.latency_runs, recipe.latency_warmup)
        report = CompressReport(variant=variant, modality=cfg.task.modality, model=cfg.model.name, artifact=str(final),
                                dense=dense, compressed=compressed, parity=parity, ratios=ratios)
        meta["report"] = report.to_json()
        write_meta(tmp, meta)
    if verbose:
        print(summary_text(report, recipe.serving_batch_size))
    return report


def summary_text(report: CompressReport, serving_batch_size: int, max_accuracy_drop: float | None = None) -> str:
    """The dense and compressed rows side by side, and the verdict (``raylm compress`` prints it). With
    ``max_accuracy_drop`` (``pipeline.max_accuracy_drop``) a drop past it is said: the gain gate judges size
    and latency only, and `raylm compress` alone said "passed" of an artifact 9 points worse."""
    from raylm.compress.measure import format_table

    ratios = report.ratios
    rows = [(f"dense fp32 {report.dense.runtime or ''}".rstrip(), report.dense)]
    # Keras: every intermediate variant (pruned, then int8), each converted and measured from its own file.
    rows += [(row.variant or "?", row) for row in (report.variants or [])[1:-1]]
    table = format_table(rows + [(report.variant, report.compressed)], (1, serving_batch_size))
    # The verdict's p50 ratio is the gate's: paired (both models timed in alternation) where measured so;
    # the table's two p50s were timed one after the other, and their quotient can point the other way.
    timing = (" (paired: the two models timed in alternation; the table's p50s were timed apart)"
              if ratios.latency_ratio_timing == "paired" else "")
    text = (f"{table}\nvs dense: accuracy {-ratios.accuracy_drop_pts:+.2f} pts, size {ratios.size_ratio:.3f}x, "
            f"p50 {ratios.latency_ratio:.3f}x at batch {serving_batch_size}{timing}: {ratios.gain.reason}")
    if max_accuracy_drop is not None and ratios.accuracy_drop_pts > max_accuracy_drop:
        text += (f"\naccuracy: {ratios.accuracy_drop_pts:.2f} pts below the dense model, past "
                 f"pipeline.max_accuracy_drop={max_accuracy_drop:g} (the pipeline would not serve it; the gain gate "
                 "above judges size and latency only)")
    return text
