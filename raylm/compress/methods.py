"""Compression methods by name: the records ``COMPRESSION_METHODS`` holds, and their lookups.

A method registers itself where it is implemented, per backend, e.g. in ``prune.py``::

    COMPRESSION_METHODS.register("prune", "magnitude", "torch")(Pruner(removes=..., tag=..., apply=...))

``compress()``, the Keras compression and the config's validation look the configured names up
(``compress.prune.method``, ``compress.quantize.mode``, ``compress.export``); an unknown name is
refused before Ray starts, naming the field and the names registered for the backend. This module
imports no framework: the config validation loads the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raylm.registry import COMPRESSION_METHODS


@dataclass(frozen=True)
class Pruner:
    removes: Callable[[Any], bool]  # (compress.prune) -> whether these settings remove any weight
    tag: Callable[[Any], str]  # (compress.prune) -> its part of the variant name
    # torch: (model, compress section, example inputs, num_classes) -> model, before any fine-tune;
    # keras: (model, x, y, *, sparsity, epochs, batch_size, lr, seed) -> model, pruned while fine-tuning.
    apply: Callable[..., Any]
    # torch: (compress section) -> TrainHooks keyword arguments the fine-tune keeps the pruning with.
    finetune_hooks: Callable[[Any], dict[str, Any]] = lambda cc: {}
    needs_finetune: bool = False  # prunes while fine-tuning: compress.finetune_epochs >= 1 when it removes


@dataclass(frozen=True)
class Quantizer:
    # torch: (fp32 file, out file, compress.quantize, calibration feeds) -> out file;
    # keras: (model, x, y, *, epochs, batch_size, lr, preserve_sparsity, seed) -> model to convert to int8.
    apply: Callable[..., Any]
    exports: tuple[str, ...] = ()  # compress.export names whose file it quantizes (torch)
    calibrated: bool = False  # reads compress.quantize.calibration_samples training rows


@dataclass(frozen=True)
class Exporter:
    model_file: str  # the artifact's file name
    runtimes: tuple[str, str]  # what reports call the runtime: (fp32, int8)
    # torch: (model, example feeds, path) -> path; keras: (model, *, int8_calibration) -> bytes.
    write: Callable[..., Any]
    auto: bool = False  # the backend's choice for compress.export=auto
    # (path, threads) -> predict(feeds): reads an fp32 file back, so parity is checked before int8.
    reader: Callable[..., Any] | None = None
    # (fp32 path) -> report entries: a lossless storage step on a file nothing quantizes.
    shrink: Callable[[Any, Any], dict[str, Any]] | None = None


def _unpruned(model: Any, *args: Any, **kwargs: Any) -> Any:
    return model


COMPRESSION_METHODS.register("prune", "none", "any")(Pruner(removes=lambda pc: False, tag=lambda pc: "", apply=_unpruned))
COMPRESSION_METHODS.register("quantize", "none", "any")(Quantizer(apply=_unpruned))


def pruner(cc, backend: str) -> Pruner:
    return COMPRESSION_METHODS.get("prune", cc.prune.method, backend)


def quantizer(cc, backend: str) -> Quantizer | None:
    """The int8 method, None for ``compress.quantize.mode=none``."""
    return None if cc.quantize.mode == "none" else COMPRESSION_METHODS.get("quantize", cc.quantize.mode, backend)


def export_name(cc, backend: str) -> str:
    """``compress.export``, with ``auto`` resolved to the backend's own choice."""
    if cc.export != "auto":
        return cc.export
    return next(name for name in COMPRESSION_METHODS.names("export", backend)
                if COMPRESSION_METHODS.get("export", name, backend).auto)


def exporter(cc, backend: str) -> Exporter:
    return COMPRESSION_METHODS.get("export", export_name(cc, backend), backend)


def prunes(cc, backend: str = "torch") -> bool:
    """Whether a compress section removes any weight (e.g. magnitude at sparsity 0 is the dense model)."""
    return pruner(cc, backend).removes(cc.prune)
