"""``compress(cfg, checkpoint)``: prune -> fine-tune -> quantize -> export -> measure -> ARTIFACT."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raylm.atomic import atomic_directory
from raylm.compress.artifact import ONNX, WEIGHTS, load_artifact, preprocessing_record, write_meta
from raylm.config import RaylmConfig
from raylm.data import MODEL_INPUTS
from raylm.errors import RaylmError


class CompressError(RaylmError):
    """Compression cannot run or its result failed a check; the message names the field or file."""


def compress_config(checkpoint: str | Path, config: str | Path | None, overrides: list[str]) -> RaylmConfig:
    """``--config`` plus overrides; without ``--config``, the checkpoint's own training config."""
    from raylm.config import ConfigError, load_config
    from raylm.train.checkpoint import CheckpointError, read_meta

    if config is not None:
        return load_config(config, overrides)
    try:
        meta = read_meta(Path(checkpoint).expanduser())
    except CheckpointError as err:
        raise CompressError(f"--checkpoint: {err}") from None
    try:
        return RaylmConfig.from_saved(meta["config"], labels=meta["labels"], changes=overrides)
    except ConfigError as err:  # e.g. the training data moved: name it, and the way out
        raise ConfigError(f"{err}\n  (the checkpoint's own config was used: pass --config or data.path=...)") from None


def variant_name(cfg: RaylmConfig) -> str:
    cc = cfg.compress
    if cc.variant:
        return cc.variant
    parts = []
    if not prunes(cc):
        pass
    elif cc.prune.method == "magnitude":
        parts.append(f"magnitude{round(cc.prune.sparsity * 100)}-{cc.prune.scope}")
    elif cc.prune.method == "structured":
        parts.append(f"structured{round(cc.prune.structured_ratio * 100)}")
    if cc.finetune_epochs and prunes(cc):
        parts.append(f"ft{cc.finetune_epochs}")
    parts.append(f"int8-{cc.quantize.mode}" if cc.quantize.mode != "none" else "fp32")
    return "-".join(parts)


def _matched_config(cfg: RaylmConfig, checkpoint: Path, loaded) -> RaylmConfig:
    """``cfg`` with the checkpoint's model section and tokenizer, after checking they agree."""
    trained = loaded.config
    for field, mine, theirs in (("task.modality", cfg.task.modality, trained.task.modality),
                                ("model.name", cfg.model.name, trained.model.name),
                                ("model.backend", cfg.model.backend, trained.model.backend),
                                ("model.kwargs", cfg.model.kwargs, trained.model.kwargs)):
        if mine != theirs:
            raise CompressError(f"{field}: the config says {mine!r} but checkpoint {checkpoint} was trained "
                                f"with {theirs!r}")
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


def prunes(cc) -> bool:
    """Whether a compress section removes any weight (magnitude at sparsity 0 is the dense model)."""
    pc = cc.prune
    return (pc.method == "magnitude" and pc.sparsity > 0) or (pc.method == "structured" and pc.structured_ratio > 0)


def _prune(cfg: RaylmConfig, model: torch.nn.Module, val: dict[str, np.ndarray], num_classes: int) -> torch.nn.Module:
    from raylm.compress.prune import magnitude_prune, structured_prune

    pc = cfg.compress.prune
    inputs = MODEL_INPUTS[cfg.task.modality]
    if pc.method == "magnitude" and not (pc.schedule == "gradual" and cfg.compress.finetune_epochs):
        magnitude_prune(model, pc.sparsity, pc.scope)
    elif pc.method == "structured":
        example = tuple(torch.from_numpy(val[name][:2]) for name in inputs)
        structured_prune(model, pc.structured_ratio, example, num_classes)
    return model


def _copy_text_files(checkpoint: Path, directory: Path) -> None:
    for name in ("tokenizer", "hf_config"):
        if (checkpoint / name).is_dir():
            shutil.copytree(checkpoint / name, directory / name)


def compress(cfg: RaylmConfig, checkpoint: str | Path, *, verbose: bool = True) -> dict[str, Any]:
    """Compress a trained checkpoint as ``cfg.compress`` says; write ``<run_dir>/compress/<variant>/``.

    Returns the JSON report (also stored in the artifact): the dense parent and the variant
    measured on the same validation rows, their ratios and the parity check.
    """
    from raylm.compress.gate import compression_ratios, ratios_to_dense
    from raylm.compress.measure import collect, format_table, measure, paired_latency_ratio
    from raylm.compress.prune import sparsity_stats
    from raylm.compress.sparse import sparsify_onnx
    from raylm.compress.quantize import export_onnx, onnx_session, quantize_onnx
    from raylm.data import build_datasets
    from raylm.runtime import ensure_ray, quiet_data_progress
    from raylm.train.checkpoint import CheckpointError, load_checkpoint

    checkpoint = Path(checkpoint).expanduser().resolve()
    try:
        loaded = load_checkpoint(checkpoint)
    except CheckpointError as err:
        raise CompressError(f"--checkpoint: {err}") from None
    cfg = _matched_config(cfg, checkpoint, loaded)
    cc, modality = cfg.compress, cfg.task.modality
    inputs = MODEL_INPUTS[modality]
    variant = variant_name(cfg)

    ensure_ray()
    quiet_data_progress()
    data = build_datasets(cfg)
    if list(data.labels) != list(loaded.labels):
        raise CompressError(f"task.labels: the data's labels {data.labels} differ from the checkpoint's {loaded.labels}")
    val = collect(data.validation, inputs + ("label",), cc.max_eval_samples)
    batch_sizes = (1, cc.serving_batch_size)
    timing = dict(batch_sizes=batch_sizes, runs=cc.latency_runs, warmup=cc.latency_warmup, threads=cc.latency_threads)

    dense_model = loaded.model
    # The reference runs on the fastest runtime raylm has for it (fp32 ONNX Runtime, 0.2-0.4x eager
    # torch's p50 here), so what a candidate gains is the compression's, not the runtime's.
    with tempfile.TemporaryDirectory() as scratch:
        dense_onnx = export_onnx(dense_model, {name: val[name][:2] for name in inputs}, Path(scratch) / "dense.onnx")
        dense_session = onnx_session(dense_onnx, cc.latency_threads)
        def dense_predict(feeds):
            return dense_session.run(["logits"], {n: feeds[n] for n in inputs})[0]

        dense, dense_preds = measure(dense_predict, val, inputs, files=[dense_onnx], counts=sparsity_stats(dense_model),
                                     **timing)
    dense["runtime"] = "onnx-fp32"

    model = _prune(cfg, copy.deepcopy(dense_model), val, len(loaded.labels))
    if cc.finetune_epochs and prunes(cc):
        from raylm.compress.finetune import finetune

        model = finetune(cfg, model, variant)
    model.eval()
    counts = sparsity_stats(model)
    export = "onnx" if cc.export == "auto" else cc.export  # the runtime the dense reference is measured on

    parity_rows = val if len(val["label"]) <= 256 else {k: v[:256] for k, v in val.items()}
    in_memory = _torch_predict(model, inputs)(parity_rows)
    final = cfg.run_dir / "compress" / variant
    with atomic_directory(final) as tmp:
        _copy_text_files(checkpoint, tmp)
        parity: dict[str, Any] = {"atol": cc.parity_atol, "rows": int(len(parity_rows["label"]))}
        if export == "safetensors":
            from safetensors.torch import save_model

            save_model(model, str(tmp / WEIGHTS))
            model_file = WEIGHTS
        else:
            fp32 = tmp / ONNX if cc.quantize.mode == "none" else Path(tempfile.mkdtemp(dir=tmp)) / "fp32.onnx"
            export_onnx(model, {name: val[name][:2] for name in inputs}, fp32)
            # Parity of the export itself (fp32 graph vs in-memory model), before int8 changes numbers.
            exported = onnx_session(fp32, 1).run(["logits"], {n: parity_rows[n] for n in inputs})[0]
            parity["fp32_onnx_max_abs_diff"] = float(np.abs(exported - in_memory).max())
            if cc.quantize.mode != "none":
                calibration = []
                if cc.quantize.mode == "static":
                    calib = collect(data.train, inputs, cc.quantize.calibration_samples)
                    calibration = [{n: calib[n][i:i + 16] for n in inputs} for i in range(0, len(calib[inputs[0]]), 16)]
                quantize_onnx(fp32, tmp / ONNX, cc.quantize.mode, calibration=calibration,
                              per_channel=cc.quantize.per_channel, skip_op_types=cc.quantize.skip_op_types)
                shutil.rmtree(fp32.parent)
            elif cc.sparse_storage:
                parity["sparse_tensors"] = sparsify_onnx(fp32)
            model_file = ONNX
        meta = {
            "task": {"modality": modality}, "labels": list(loaded.labels), "inputs": list(inputs),
            "preprocessing": preprocessing_record(cfg),
            "architecture": {"backend": cfg.model.backend, "name": cfg.model.name, "kwargs": cfg.model.kwargs,
                             "num_classes": len(loaded.labels), "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
                             "config": cfg.to_dict()},
            "model_file": model_file,
            "recipe": cc.model_dump(mode="json") | {"variant": variant, "export": export},
            "lineage": {"parent_checkpoint": str(checkpoint), "parent_epoch": loaded.meta.get("epoch"),
                        "parent_metrics": loaded.meta.get("metrics", {}), "data_fingerprint": data.fingerprint,
                        "config_hash": hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16]},
        }
        write_meta(tmp, meta)
        # The report is measured on the exported file, reloaded as serving will load it.
        artifact = load_artifact(tmp, threads=cc.latency_threads)
        reloaded = artifact.predict(parity_rows)
        parity["max_abs_diff"] = float(np.abs(reloaded - in_memory).max())
        parity["top1_agreement"] = float((reloaded.argmax(-1) == in_memory.argmax(-1)).mean())
        if cc.quantize.mode == "none":
            parity["passed"] = parity["max_abs_diff"] <= cc.parity_atol
        else:  # int8 changes the numbers by design: the export is checked before quantization
            parity["passed"] = parity["fp32_onnx_max_abs_diff"] <= cc.parity_atol
        if not parity["passed"]:
            raise CompressError(f"parity check failed for {variant}: exported model differs from the in-memory one "
                                f"by more than compress.parity_atol={cc.parity_atol}: {parity}")
        report_files = [tmp / model_file]
        compressed, preds = measure(artifact.predict, val, inputs, files=report_files, counts=counts, **timing)
        compressed["agreement_with_dense"] = float((preds == dense_preds).mean())
        compressed["runtime"] = "onnx-" + ("fp32" if cc.quantize.mode == "none" else "int8") if export == "onnx" else "torch"
        paired = paired_latency_ratio(artifact.predict, dense_predict, val, inputs, cc.serving_batch_size,
                                      cc.latency_runs, cc.latency_warmup)
        ratios = ratios_to_dense(dense, compressed, batch_sizes) | compression_ratios(
            dense, compressed, cc.serving_batch_size, cc, paired_latency_ratio=paired)
        if not prunes(cc) and cc.quantize.mode == "none":  # a p50 ratio below 1 here is timing noise
            ratios["gain"] = {"passed": False, "reason": "no gain: the dense model (nothing compressed)"}
        report = {"variant": variant, "modality": modality, "model": cfg.model.name, "artifact": str(final),
                  "dense": dense, "compressed": compressed, "parity": parity, "ratios": ratios}
        meta["report"] = report
        write_meta(tmp, meta)
    if verbose:
        print(format_table([("dense fp32 onnx", dense), (variant, compressed)], batch_sizes))
        print(f"vs dense: {ratios['accuracy_drop_pts']:+.2f} pts accuracy drop, size {ratios['size_ratio']:.3f}x, "
              f"p50 {ratios['latency_ratio']:.3f}x at batch {cc.serving_batch_size}: {ratios['gain']['reason']}")
    return report
