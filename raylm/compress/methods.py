"""Compression methods by name: the records ``COMPRESSION_METHODS`` holds, and their lookups.

A method registers itself where it is implemented, per backend, e.g. in ``prune.py``::

    COMPRESSION_METHODS.register("prune", "magnitude", "torch")(Pruner(tag=..., apply=...))

against its declaration in ``raylm.registry``, which holds what the config's validation needs as plain
data (which prune setting removes weights, which pruners prune while fine-tuning, what each quantizer
exports, the backend's export for ``auto``). ``compress()`` and the Keras compression look the
configured names up (``compress.prune.method``, ``compress.quantize.mode``, ``compress.export``); an
unknown name is refused before Ray starts, naming the field and the names declared for the backend.
This module imports no framework.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raylm.registry import COMPRESSION_METHODS


@dataclass(frozen=True)
class Pruner:
    tag: Callable[[Any], str]  # (compress.prune) -> its part of the variant name
    # torch: (model, compress section, example inputs, num_classes) -> model, before any fine-tune;
    # keras: (model, x, y, *, sparsity, epochs, batch_size, lr, seed) -> model, pruned while fine-tuning.
    apply: Callable[..., Any]
    # torch: (compress section) -> TrainHooks keyword arguments the fine-tune keeps the pruning with.
    finetune_hooks: Callable[[Any], dict[str, Any]] = lambda recipe: {}


@dataclass(frozen=True)
class Quantizer:
    # torch: (fp32 file, out file, compress.quantize, calibration feeds) -> out file;
    # keras: (model, x, y, *, epochs, batch_size, lr, preserve_sparsity, seed) -> model to convert to int8.
    apply: Callable[..., Any]
    calibrated: bool = False  # reads compress.quantize.calibration_samples training rows


@dataclass(frozen=True)
class Exporter:
    model_file: str  # the artifact's file name
    runtimes: tuple[str, str]  # what reports call the runtime: (fp32, int8)
    # torch: (model, example feeds, path) -> path; keras: (model, *, int8_calibration) -> bytes.
    write: Callable[..., Any]
    # (path, threads) -> predict(feeds): reads an fp32 file back, so parity is checked before int8.
    reader: Callable[..., Any] | None = None
    # (final model file, compress section, parity feeds) -> report entries: a lossless storage step
    # (raylm.artifacts.sparse) on the fp32 or int8 file, checked on the feeds.
    shrink: Callable[[Any, Any, Any], dict[str, Any]] | None = None


def _unpruned(model: Any, *args: Any, **kwargs: Any) -> Any:
    return model


COMPRESSION_METHODS.register("prune", "none", "any")(Pruner(tag=lambda prune: "", apply=_unpruned))
COMPRESSION_METHODS.register("quantize", "none", "any")(Quantizer(apply=_unpruned))


def pruner(recipe, backend: str) -> Pruner:
    return COMPRESSION_METHODS.get("prune", recipe.prune.method, backend)


def quantizer(recipe, backend: str) -> Quantizer | None:
    """The int8 method, None for ``compress.quantize.mode=none``."""
    return None if recipe.quantize.mode == "none" else COMPRESSION_METHODS.get("quantize", recipe.quantize.mode, backend)


def export_name(recipe, backend: str) -> str:
    """``compress.export``, with ``auto`` resolved to the backend's own choice (declared, so no framework is imported)."""
    if recipe.export != "auto":
        return recipe.export
    return next(name for name in COMPRESSION_METHODS.names("export", backend)
                if COMPRESSION_METHODS.spec("export", name, backend).auto)


def exporter(recipe, backend: str) -> Exporter:
    return COMPRESSION_METHODS.get("export", export_name(recipe, backend), backend)


def prunes(recipe, backend: str = "torch") -> bool:
    """Whether a compression recipe (the compress section) removes any weight (e.g. magnitude at sparsity 0 is the dense model):
    read from the pruner's declaration, so no framework is imported."""
    return COMPRESSION_METHODS.spec("prune", recipe.prune.method, backend).removes(recipe.prune)


def distills(recipe, backend: str = "torch") -> bool:
    """Whether the recipe trains a smaller student first (``compress.distill``); declared, so no framework is imported."""
    return COMPRESSION_METHODS.spec("distill", recipe.distill.method, backend).trains


def compresses(recipe, backend: str = "torch") -> bool:
    """Whether a recipe changes the dense model at all: shrinks the vocabulary, distills, prunes or quantizes."""
    return (recipe.vocabulary != "full" or distills(recipe, backend) or prunes(recipe, backend)
            or recipe.quantize.mode != "none")
