"""Registries ``(task, name[, backend]) -> builder`` for models, datasets and compression methods.

Builders register themselves with a decorator where they are defined; the modules that hold them
are imported lazily on first lookup so that ``import raylm`` stays cheap and a PyTorch job never
imports TensorFlow.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

_Key = tuple[str, str, str]
_FRAMEWORK_ARGS = {"cfg", "num_classes", "load_pretrained"}  # passed by raylm itself, never by a config


class Registry:
    def __init__(self, kind: str, modules: list[str]) -> None:
        self.kind = kind
        self._modules = modules
        self._builders: dict[_Key, Callable[..., Any]] = {}
        self._defaults: dict[str, str] = {}
        self._loaded = False

    def register(self, task: str, name: str, backend: str = "torch", *, default: bool = False):
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            key = (task, name, backend)
            if key in self._builders and self._builders[key] is not fn:
                raise KeyError(f"{self.kind} {key} is registered twice")
            self._builders[key] = fn
            if default:
                self._defaults[task] = name
            return fn

        return decorate

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                importlib.import_module(module)

    def names(self, task: str, backend: str = "torch") -> list[str]:
        self._load()
        return sorted(n for (t, n, b) in self._builders if t == task and b in (backend, "any"))

    def check(self, task: str, name: str, backend: str = "torch", *, field: str = "name") -> None:
        self._load()
        if (task, name, backend) not in self._builders and (task, name, "any") not in self._builders:
            known = ", ".join(self.names(task, backend)) or "none"
            raise ValueError(f"{field}: unknown {self.kind} '{name}' for task '{task}' "
                             f"(backend {backend}); known: {known}")

    def get(self, task: str, name: str, backend: str = "torch") -> Callable[..., Any]:
        self.check(task, name, backend)
        return self._builders.get((task, name, backend)) or self._builders[(task, name, "any")]

    def check_kwargs(self, task: str, name: str, backend: str, kwargs: dict[str, Any], *, field: str) -> None:
        """Builders get only the arguments they declare, with plain values: a config (or an artifact's
        recorded config) cannot hand a builder anything else (e.g. ``trust_remote_code``)."""
        params = inspect.signature(self.get(task, name, backend)).parameters.values()
        accepted = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - _FRAMEWORK_ARGS
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ValueError(f"{field}: {unknown} not accepted by {self.kind} '{name}' (accepted: {sorted(accepted) or 'none'})")
        for key, value in kwargs.items():
            items = value if isinstance(value, list) else [value]
            if not all(v is None or isinstance(v, (bool, int, float, str)) for v in items):
                raise ValueError(f"{field}.{key}: must be a number, string, bool or a list of them")

    def default(self, task: str) -> str:
        self._load()
        return self._defaults[task]


MODELS = Registry("model", ["raylm.models.image", "raylm.models.audio", "raylm.models.text", "raylm.models.keras"])
DATASETS = Registry("dataset", ["raylm.data.demo"])
# Compression methods, keyed (step, name, backend): step "prune" (compress.prune.method), "quantize"
# (compress.quantize.mode) or "export" (compress.export); the records are raylm.compress.methods'.
COMPRESSION_METHODS = Registry("compression method", ["raylm.compress.methods", "raylm.compress.prune",
                                                      "raylm.compress.quantize", "raylm.compress.keras"])
