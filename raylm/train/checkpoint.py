"""Checkpoint directories: weights as safetensors plus the resolved config, loadable without pickle.

Layout::

    raylm.json           format, resolved config, labels, epoch, metrics, data fingerprint
    model.safetensors    the unwrapped model's state dict
    optimizer.pt         optimizer state (tensors and plain values; loaded with weights_only=True);
                         only in a run's latest checkpoint (drop_stale_optimizer_states)
    hf_config/           text models: the HF architecture config, so no hub is needed to rebuild
    tokenizer/           text models: the tokenizer the data was encoded with

A checkpoint is data, never code: it is rebuilt from its own files only (the recorded config's
hub names and paths are replaced by the checkpoint's ``hf_config/`` and ``tokenizer/``), offline,
with no remote code and with the builder arguments the builder declares.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_model, save_model

from raylm.atomic import atomic_directory
from raylm.config import RaylmConfig
from raylm.errors import RaylmError
# Re-exported: the artifacts load through it too, from hf_sources, without importing torch with this module.
from raylm.hf_sources import own_files_config  # noqa: F401
from raylm.meta import MetaFormatError, VersionedMeta
from raylm.storage import StoragePath, is_uri

META = "raylm.json"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"


class CheckpointError(RaylmError):
    pass


class CheckpointMeta(VersionedMeta):
    """``raylm.json``: the part of a checkpoint every backend writes alike (``raylm.meta``: versioned
    like an artifact's ``artifact.json``)."""

    KIND: ClassVar[str] = "raylm.checkpoint"
    VERSION: ClassVar[int] = 1

    config: dict[str, Any]
    labels: list[str]
    epoch: int = 0
    metrics: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    data_fingerprint: str | None = None


FORMAT = CheckpointMeta.format_of()


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
    save_weights(model, out / WEIGHTS)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), out / OPTIMIZER)
    hf = getattr(model, "hf", None)
    if hf is not None:
        hf.config.save_pretrained(out / "hf_config")
        from raylm.data.text import load_tokenizer, tokenizer_source

        load_tokenizer(tokenizer_source(cfg)).save_pretrained(out / "tokenizer")
    write_meta(out, cfg, labels, epoch=epoch, metrics=metrics, history=history, data_fingerprint=data_fingerprint)
    return out


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """safetensors' ``save_model``, whose I/O failures (a full disk) surface as the ``OSError`` they are."""
    import re

    from safetensors import SafetensorError

    try:
        save_model(model, str(path))
    except SafetensorError as err:
        code = re.search(r"os error (\d+)", str(err))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from err


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
    """``raylm.json``: the part of a checkpoint every backend writes alike (``CheckpointMeta``)."""
    meta = CheckpointMeta.stamp({
        "config": cfg.to_dict(),
        "labels": list(labels),
        "epoch": epoch,
        "metrics": metrics or {},
        "history": history or [],
        "data_fingerprint": data_fingerprint,
    })
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
    except NotADirectoryError:  # a file: Ray Train's checkpoint_manager_snapshot.json, or raylm.json itself
        raise CheckpointError(f"{directory}: not a raylm checkpoint (a file; a checkpoint is the directory "
                              f"holding {META})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: corrupted ({type(err).__name__})") from None
    return parse_meta(meta, path)


def parse_meta(meta: Any, where: Any) -> dict[str, Any]:
    """A parsed ``raylm.json`` checked and upgraded (``CheckpointMeta``), as a dict; ``CheckpointError`` names ``where``."""
    try:
        return CheckpointMeta.parse(meta, where).model_dump()
    except MetaFormatError as err:
        raise CheckpointError(str(err)) from None


def checkpoint_config(directory: str | os.PathLike[str]) -> RaylmConfig:
    """The config a checkpoint was trained with, pointed at the files the checkpoint carries."""
    from pydantic import ValidationError

    from raylm.config import format_validation_error

    meta = read_meta(directory)
    try:
        return RaylmConfig.model_validate(own_files_config(meta["config"], meta["labels"], Path(directory)))
    except ValidationError as err:
        raise CheckpointError(f"{Path(directory) / META}: config is {format_validation_error(err)}") from None
    except (KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{Path(directory) / META}: corrupted config ({err!r})") from None


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


def checkpoint_rank(metrics: dict[str, Any]) -> tuple[float, float, int]:
    """How a run's checkpoints are ranked, best highest: val_accuracy, then the lower val_loss, then the
    later epoch. Accuracy alone ties often on a small validation split (1.0 at every epoch of a text run
    whose loss fell 1.00 -> 0.56 -> 0.22), and the first of the tied, the least trained, was served."""
    accuracy, loss = metrics.get("val_accuracy"), metrics.get("val_loss")

    def finite(value: Any) -> bool:
        return isinstance(value, (int, float)) and math.isfinite(value)

    return (float(accuracy) if finite(accuracy) else float("-inf"), -float(loss) if finite(loss) else float("-inf"),
            int(metrics.get("epoch") or 0))


def best_kept(kept: list[tuple[Any, dict[str, Any]]]) -> tuple[Any, dict[str, Any]]:
    """The best ``(checkpoint, metrics)`` of ``kept`` by :func:`checkpoint_rank`."""
    return max(kept, key=lambda entry: checkpoint_rank(entry[1]))


def run_checkpoints(run: Path) -> list[Path]:
    """The raylm checkpoints a Ray Train run directory holds (Ray resumes from its latest one)."""
    return sorted(meta.parent for meta in run.glob(f"checkpoint_*/{META}"))


def read_stored_meta(location: StoragePath) -> dict[str, Any]:
    """``read_meta`` for a checkpoint in storage (local or URI), without downloading its weights."""
    if location.is_local:
        return read_meta(location.local_path)
    try:
        meta = location.join(META).read_json()
    except FileNotFoundError:
        raise CheckpointError(f"{location}: not a raylm checkpoint (no {META})") from None
    except (ValueError, OSError) as err:
        raise CheckpointError(f"{location.join(META)}: unreadable ({type(err).__name__})") from None
    return parse_meta(meta, location.join(META))


def stored_checkpoints(train: StoragePath) -> list[tuple[StoragePath, dict[str, Any]]]:
    """The checkpoints of a run's ``train/`` in storage whose ``raylm.json`` reads, oldest first: one
    listing, by whichever process decides (the driver), for local paths and URIs alike. ``raylm.json``
    is written last (in_process.py), so one whose metadata reads is whole or fails its load."""
    found = []
    for child in train.iterdir():
        if not child.name.startswith("checkpoint_"):
            continue
        try:
            found.append((child, read_stored_meta(child)))
        except CheckpointError:
            continue
    return found


def stored_reports(train: StoragePath) -> list[tuple[StoragePath, dict[str, Any]]]:
    """A run's checkpoints in storage, each with the metrics its epoch reported, oldest first: what a rerun
    of a run already trained to ``train.epochs`` answers with (it has no epoch left to report)."""
    found = [(location, {**meta.get("metrics", {}), "epoch": int(meta.get("epoch", 0))})
             for location, meta in stored_checkpoints(train)]
    return sorted(found, key=lambda entry: entry[1]["epoch"])


def checkpoint_location(checkpoint: Any, options: dict[str, Any] | None = None) -> StoragePath:
    """A ``ray.train.Checkpoint`` (a path on a pyarrow filesystem) as a ``StoragePath``."""
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return StoragePath.of(checkpoint.path)
    scheme = {"gcs": "gs"}.get(checkpoint.filesystem.type_name, checkpoint.filesystem.type_name)
    return StoragePath.of(f"{scheme}://{checkpoint.path}", options)


def newest_checkpoint(checkpoints: list[Any], options: dict[str, Any] | None = None):
    """Of ``ray.train.Checkpoint`` s (None entries skipped), the one whose ``raylm.json`` records the highest
    epoch; None if none is given. Ray's controller hands a rerun of a run with the same name the last
    checkpoint it *registered*, which can be older than the newest whole one in storage (the driver's
    ``decide_resume``): a Ctrl-C lands between a checkpoint's upload and its registration."""
    found = [(int(read_stored_meta(checkpoint_location(c, options)).get("epoch", 0)), i, c)
             for i, c in enumerate(checkpoints) if c is not None]
    return max(found, key=lambda f: (f[0], -f[1]))[2] if found else None  # a tie: the first given


def ray_checkpoint(uri: str, options: dict[str, Any] | None = None):
    """A ``ray.train.Checkpoint`` for a stored checkpoint (local path or URI, with the run's storage options)."""
    import ray.train

    location = StoragePath.of(uri, options if is_uri(uri) else None)
    return ray.train.Checkpoint(location.path, filesystem=location.fs)


def check_belongs(directory: str | os.PathLike[str], cfg: RaylmConfig, labels: list[str],
                  data_fingerprint: str | None, *, meta: dict[str, Any] | None = None) -> None:
    """Refuse to continue from a checkpoint of another run: other labels (or their order), another
    model, or other data. A silent resume would train on, or swap, the wrong classes."""
    meta = meta if meta is not None else read_meta(directory)
    where = f"checkpoint {directory}"
    if list(meta["labels"]) != list(labels):
        raise CheckpointError(f"{where} was trained with labels {meta['labels']}, but this run's data has {list(labels)} "
                              "(resuming needs the same labels in the same order; use another train.name)")
    mine, theirs = cfg.to_dict(), meta["config"]
    for section, key in (("task", "modality"), ("model", "backend"), ("model", "name"), ("model", "kwargs")):
        recorded = theirs.get(section, {}).get(key) if isinstance(theirs.get(section), dict) else None
        if recorded != mine[section][key]:
            raise CheckpointError(f"{where} was trained with {section}.{key}={recorded!r}, this run has "
                                  f"{mine[section][key]!r} (use another train.name)")
    recorded = meta.get("data_fingerprint")
    if data_fingerprint and recorded and recorded != data_fingerprint:
        raise CheckpointError(f"{where} was trained on other data (fingerprint {recorded}, this run's data "
                              f"{data_fingerprint}); use another train.name")


def restore_training_state(directory: str | os.PathLike[str], model: torch.nn.Module,
                           optimizer: torch.optim.Optimizer | None) -> int:
    """Load weights (and optimizer state) in place; returns the number of epochs already done."""
    meta = read_meta(directory)
    load_weights(directory, model)
    opt_path = Path(directory) / OPTIMIZER
    if optimizer is not None and opt_path.exists():
        optimizer.load_state_dict(torch.load(opt_path, map_location="cpu", weights_only=True))
    return int(meta["epoch"])


def restore_newest(candidates: list[str | os.PathLike[str]], model: torch.nn.Module,
                   optimizer: torch.optim.Optimizer | None) -> tuple[Path, int] | None:
    """Restore the candidate checkpoint with the highest epoch that loads whole; ``None`` if none does.

    A restarted worker group (``train.max_failures``) hears from Ray only of the checkpoints whose
    report reached the Train controller; a worker killed between persisting a checkpoint and that
    report leaves a newer, complete checkpoint on disk that Ray does not know. Resuming from the
    newest one that loads redoes at most the epoch in progress. A torn one (its writer died while
    Ray copied it) fails to load and the next older is tried; each restore overwrites every weight."""
    ranked = []
    for directory in {Path(c) for c in candidates}:
        try:
            ranked.append((int(read_meta(directory)["epoch"]), directory))
        except (CheckpointError, KeyError, TypeError, ValueError, OSError):
            continue
    for epoch, directory in sorted(ranked, key=lambda ed: ed[0], reverse=True):
        try:
            return directory, restore_training_state(directory, model, optimizer)
        except (CheckpointError, RuntimeError, OSError, ValueError, EOFError):
            continue
    return None


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
    try:
        model = build_model(cfg, len(meta["labels"]), load_pretrained=False)
    except (OSError, ValueError) as err:  # e.g. an hf_config/ that transformers refuses offline
        raise CheckpointError(f"{directory}: the model cannot be built from the checkpoint ({str(err)[:300]})") from None
    load_weights(directory, model)
    return LoadedModel(model.eval(), cfg, meta["labels"], meta)
