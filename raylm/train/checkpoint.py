"""Checkpoint directories: weights as safetensors plus the resolved config, loadable without pickle.

Layout::

    raylm.json           format, resolved config, labels, epoch, metrics, data fingerprint
    model.safetensors    the unwrapped model's state dict
    optimizer.pt         optimizer state (tensors and plain values; loaded with weights_only=True);
                         only in a run's latest checkpoint (drop_stale_optimizer_states)
    hf_config/           text models: the HF architecture config, so no hub is needed to rebuild
    tokenizer/           text models: the tokenizer the data was encoded with
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from raylm.atomic import atomic_directory
from raylm.config import RaylmConfig

FORMAT = "raylm.checkpoint/1"
META = "raylm.json"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"


class CheckpointError(ValueError):
    pass


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under DDP / torch.compile wrappers, whose state dict keys are stable."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def write_checkpoint(
    directory: str | os.PathLike[str],
    model: torch.nn.Module,
    cfg: RaylmConfig,
    labels: list[str],
    *,
    epoch: int,
    metrics: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    data_fingerprint: str | None = None,
) -> Path:
    """Write a checkpoint into ``directory`` (created; must not hold another checkpoint)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model = unwrap(model)
    save_model(model, str(out / WEIGHTS))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), out / OPTIMIZER)
    hf = getattr(model, "hf", None)
    if hf is not None:
        hf.config.save_pretrained(out / "hf_config")
        from raylm.models.text import load_tokenizer, tokenizer_source

        load_tokenizer(tokenizer_source(cfg)).save_pretrained(out / "tokenizer")
    write_meta(out, cfg, labels, epoch=epoch, metrics=metrics, history=history, data_fingerprint=data_fingerprint)
    return out


def drop_stale_optimizer_states(latest: Any, epoch: int, names: tuple[str, ...] = (OPTIMIZER, "optimizer.npz")) -> int:
    """Keep the optimizer state only in the latest checkpoint of a run, where resuming needs it.

    ``latest`` is ``ray.train.get_checkpoint()`` after this epoch's report (a checkpoint of this run,
    in the run's storage); from its sibling checkpoints of earlier epochs the optimizer files are
    removed. AdamW's state is twice the weights, so the best checkpoint kept beside the latest one
    no longer triples its size. Returns how many files were removed."""
    if latest is None:
        return 0
    import posixpath

    import pyarrow.fs

    fs, parent = latest.filesystem, posixpath.dirname(latest.path.rstrip("/"))
    removed = 0
    for info in fs.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True)):
        if info.type != pyarrow.fs.FileType.Directory:
            continue
        try:
            with fs.open_input_stream(posixpath.join(info.path, META)) as f:
                saved_epoch = int(json.loads(f.read()).get("epoch", epoch))
        except (OSError, ValueError):  # not a checkpoint, or one Ray is deleting right now
            continue
        if saved_epoch >= epoch:
            continue
        for name in names:
            try:
                fs.delete_file(posixpath.join(info.path, name))
                removed += 1
            except (FileNotFoundError, OSError):
                pass
    return removed


def write_meta(directory: Path, cfg: RaylmConfig, labels: list[str], *, epoch: int,
               metrics: dict[str, Any] | None = None, history: list[dict[str, Any]] | None = None,
               data_fingerprint: str | None = None) -> None:
    """``raylm.json``: the part of a checkpoint every backend writes alike."""
    meta = {
        "format": FORMAT,
        "config": cfg.to_dict(),
        "labels": list(labels),
        "epoch": epoch,
        "metrics": metrics or {},
        "history": history or [],
        "data_fingerprint": data_fingerprint,
    }
    (directory / META).write_text(json.dumps(meta, indent=2))


def save_checkpoint_atomic(directory: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Path:
    """``write_checkpoint`` into a temporary sibling, renamed into place when whole."""
    final = Path(directory)
    with atomic_directory(final) as tmp:
        write_checkpoint(tmp, *args, **kwargs)
    return final


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: not a raylm checkpoint (no {META})") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: corrupted ({err})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def checkpoint_config(directory: str | os.PathLike[str]) -> RaylmConfig:
    """The config a checkpoint was trained with, pointed at the files the checkpoint carries."""
    meta = read_meta(directory)
    tree = meta["config"]
    tree["task"]["labels"] = meta["labels"]
    if (Path(directory) / "hf_config").is_dir():
        tree["model"]["pretrained"] = str(Path(directory) / "hf_config")
    if (Path(directory) / "tokenizer").is_dir():
        tree["data"]["text"]["tokenizer"] = str(Path(directory) / "tokenizer")
    tree["train"]["resume_from"] = None
    # The data paths may not exist where the checkpoint is loaded; they are not needed to rebuild.
    tree["data"].update(path=None, validation_path=None)
    return RaylmConfig.model_validate(tree)


def load_weights(directory: str | os.PathLike[str], model: torch.nn.Module) -> None:
    try:
        missing, unexpected = load_model(unwrap(model), str(Path(directory) / WEIGHTS), strict=False)
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: no {WEIGHTS}") from None
    except RuntimeError as err:  # shape mismatch: a checkpoint of another architecture
        raise CheckpointError(f"{directory}: weights do not fit the configured model: {err}") from None
    except Exception as err:  # safetensors' header errors for truncated or corrupted files
        raise CheckpointError(f"{directory}/{WEIGHTS}: corrupted ({err})") from None
    if missing or unexpected:
        raise CheckpointError(f"{directory}: weights do not fit the configured model "
                              f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")


def restore_training_state(directory: str | os.PathLike[str], model: torch.nn.Module,
                           optimizer: torch.optim.Optimizer | None) -> int:
    """Load weights (and optimizer state) in place; returns the number of epochs already done."""
    meta = read_meta(directory)
    load_weights(directory, model)
    opt_path = Path(directory) / OPTIMIZER
    if optimizer is not None and opt_path.exists():
        optimizer.load_state_dict(torch.load(opt_path, map_location="cpu", weights_only=True))
    return int(meta["epoch"])


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: RaylmConfig
    labels: list[str]
    meta: dict[str, Any]


def load_checkpoint(directory: str | os.PathLike[str]) -> LoadedModel:
    """Rebuild the trained model from a checkpoint alone (eval mode, CPU)."""
    from raylm.models import build_model

    directory = Path(directory)
    meta = read_meta(directory)
    cfg = checkpoint_config(directory)
    model = build_model(cfg, len(meta["labels"]), load_pretrained=False)
    load_weights(directory, model)
    return LoadedModel(model.eval(), cfg, meta["labels"], meta)
