"""Registries ``(task, name, backend) -> implementation`` for models, datasets and compression methods,
and what each implementation declares, as plain data, in one place: this module.

A config's validation needs to know the names registered per modality and backend, the
``model.kwargs`` each builder accepts, the modality's default dataset, what each quantizer exports
and which pruners prune while fine-tuning. Those facts are the declarations below, so
``load_config`` reads them without importing a model or compression module (no torch, no
TensorFlow). The implementations register against them where they are defined: registering a name
that is not declared, or a builder whose keyword arguments differ from its declaration, fails when
its module is imported, and ``get`` of a declared name that no module registers fails naming the
declaration (tests/test_registry_and_models.py checks both directions for every entry).
The implementing modules are imported lazily, on the first ``get``, so a PyTorch job never imports
TensorFlow.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

_Key = tuple[str, str, str]
_FRAMEWORK_ARGS = {"cfg", "num_classes", "load_pretrained"}  # passed by raylm itself, never by a config
Spec = TypeVar("Spec")


@dataclass(frozen=True)
class ModelSpec:
    kwargs: tuple[str, ...] = ()  # the model.kwargs its builder accepts, besides raylm's own arguments


@dataclass(frozen=True)
class DatasetSpec:
    default: bool = False  # the modality's dataset when a config names neither data.name nor data.path


@dataclass(frozen=True)
class PruneSpec:
    # The compress.prune setting that removes weights when above 0 (None: the method never removes any).
    amount: str | None = None
    needs_finetune: bool = False  # prunes while fine-tuning: compress.finetune_epochs >= 1 when it removes

    def removes(self, prune: Any) -> bool:
        """Whether these ``compress.prune`` settings remove any weight (magnitude at sparsity 0 is the dense model)."""
        return self.amount is not None and getattr(prune, self.amount) > 0


@dataclass(frozen=True)
class QuantizeSpec:
    exports: tuple[str, ...] = ()  # the compress.export names whose file it quantizes


@dataclass(frozen=True)
class DistillSpec:
    trains: bool = False  # builds and trains a student (compress.distill.epochs >= 1 needed)


@dataclass(frozen=True)
class ExportSpec:
    auto: bool = False  # the backend's choice for compress.export=auto


class Registry(Generic[Spec]):
    def __init__(self, kind: str, modules: list[str], declared: dict[_Key, Spec]) -> None:
        self.kind = kind
        self._modules = modules
        self.declared = declared
        self._implementations: dict[_Key, Any] = {}
        self._loaded = False

    def register(self, task: str, name: str, backend: str = "torch", *, default: bool | None = None):
        """Attach the implementation of a declared entry; ``default``, if given, must agree with the declaration."""
        key = (task, name, backend)

        def decorate(implementation: Any) -> Any:
            if key not in self.declared:
                raise KeyError(f"{self.kind} {key} is not declared: add it to raylm.registry's {self.kind} declarations")
            if key in self._implementations and self._implementations[key] is not implementation:
                raise KeyError(f"{self.kind} {key} is registered twice")
            if default is not None and default != getattr(self.declared[key], "default", False):
                raise KeyError(f"{self.kind} {key}: default={default} disagrees with its declaration in raylm.registry")
            self._verify(key, self.declared[key], implementation)
            self._implementations[key] = implementation
            return implementation

        return decorate

    def _verify(self, key: _Key, spec: Spec, implementation: Any) -> None:
        """Refuse an implementation that contradicts its declaration (checked on registration)."""

    def _key(self, task: str, name: str, backend: str) -> _Key | None:
        return next((k for k in ((task, name, backend), (task, name, "any")) if k in self.declared), None)

    def names(self, task: str, backend: str = "torch") -> list[str]:
        return sorted(n for (t, n, b) in self.declared if t == task and b in (backend, "any"))

    def check(self, task: str, name: str, backend: str = "torch", *, field: str = "name") -> None:
        if self._key(task, name, backend) is None:
            known = ", ".join(self.names(task, backend)) or "none"
            raise ValueError(f"{field}: unknown {self.kind} '{name}' for task '{task}' "
                             f"(backend {backend}); known: {known}")

    def spec(self, task: str, name: str, backend: str = "torch", *, field: str = "name") -> Spec:
        """The declaration: plain data, no module imported."""
        self.check(task, name, backend, field=field)
        return self.declared[self._key(task, name, backend)]

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                importlib.import_module(module)

    def implemented(self) -> set[_Key]:
        """The entries some module registered (imports them all): the declarations' counterpart."""
        self._load()
        return set(self._implementations)

    def get(self, task: str, name: str, backend: str = "torch") -> Any:
        """The implementation: imports the implementing modules on first use."""
        self.check(task, name, backend)
        self._load()
        key = self._key(task, name, backend)
        if key not in self._implementations:
            raise LookupError(f"{self.kind} {key} is declared in raylm.registry but none of {self._modules} registers it")
        return self._implementations[key]

    def default(self, task: str) -> str:
        name = next((n for (t, n, _), spec in self.declared.items() if t == task and getattr(spec, "default", False)), None)
        if name is None:
            raise KeyError(f"no default {self.kind} is declared for '{task}' in raylm.registry")
        return name


class ModelRegistry(Registry[ModelSpec]):
    def check_kwargs(self, task: str, name: str, backend: str, kwargs: dict[str, Any], *, field: str) -> None:
        """Builders get only the arguments they declare, with plain values: a config (or an artifact's
        recorded config) cannot hand a builder anything else (e.g. ``trust_remote_code``)."""
        accepted = set(self.spec(task, name, backend).kwargs)
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ValueError(f"{field}: {unknown} not accepted by {self.kind} '{name}' (accepted: {sorted(accepted) or 'none'})")
        for key, value in kwargs.items():
            items = value if isinstance(value, list) else [value]
            if not all(v is None or isinstance(v, (bool, int, float, str)) for v in items):
                raise ValueError(f"{field}.{key}: must be a number, string, bool or a list of them")

    def _verify(self, key: _Key, spec: ModelSpec, implementation: Callable[..., Any]) -> None:
        params = inspect.signature(implementation).parameters.values()
        accepted = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - _FRAMEWORK_ARGS
        if accepted != set(spec.kwargs):
            raise TypeError(f"model {key}: the builder accepts {sorted(accepted)}, its declaration in raylm.registry "
                            f"says {sorted(spec.kwargs)}")


MODELS = ModelRegistry("model", ["raylm.models.image", "raylm.models.audio", "raylm.models.text", "raylm.models.keras"], {
    ("image", "seed_cnn", "torch"): ModelSpec(kwargs=("channels",)),
    ("image", "resnet_small", "torch"): ModelSpec(kwargs=("widths", "blocks_per_stage")),
    ("audio", "seed_conv1d", "torch"): ModelSpec(kwargs=("channels",)),
    ("audio", "conv1d_net", "torch"): ModelSpec(kwargs=("widths", "dropout")),
    ("text", "hf", "torch"): ModelSpec(kwargs=("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")),
    ("text", "bert_tiny", "torch"): ModelSpec(
        kwargs=("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")),
    ("image", "seed_mlp", "keras"): ModelSpec(kwargs=("hidden",)),
    ("audio", "seed_mlp", "keras"): ModelSpec(kwargs=("hidden",)),
    ("image", "seed_cnn", "keras"): ModelSpec(kwargs=("channels",)),
    ("audio", "seed_conv1d", "keras"): ModelSpec(kwargs=("channels",)),
})

# Datasets are keyed (modality, name, "any"): any backend reads them.
DATASETS = Registry[DatasetSpec]("dataset", ["raylm.data.demo"], {
    ("image", "digits", "any"): DatasetSpec(default=True),
    ("image", "shapes", "any"): DatasetSpec(),
    ("text", "topics", "any"): DatasetSpec(default=True),
    ("audio", "spoken_digits", "any"): DatasetSpec(default=True),
})

# Compression methods, keyed (step, name, backend): step "prune" (compress.prune.method), "quantize"
# (compress.quantize.mode), "distill" (compress.distill.method) or "export" (compress.export); the implementations are raylm.compress.methods'
# Pruner, Quantizer and Exporter records.
COMPRESSION_METHODS = Registry[Any]("compression method", ["raylm.compress.methods", "raylm.compress.prune",
                                                           "raylm.compress.quantize", "raylm.compress.keras",
                                                           "raylm.compress.static_int8", "raylm.compress.distill"], {
    ("prune", "none", "any"): PruneSpec(),
    ("prune", "magnitude", "torch"): PruneSpec(amount="sparsity"),
    ("prune", "structured", "torch"): PruneSpec(amount="structured_ratio"),
    # tfmot prunes while it fine-tunes.
    ("prune", "magnitude", "keras"): PruneSpec(amount="sparsity", needs_finetune=True),
    ("quantize", "none", "any"): QuantizeSpec(),
    ("quantize", "dynamic", "torch"): QuantizeSpec(exports=("onnx",)),
    ("quantize", "static", "torch"): QuantizeSpec(exports=("onnx",)),
    # static, with the Convs whose int8 kernel is slower than fp32 kept fp32 when timing says so (static_int8.py).
    ("quantize", "static-selective", "torch"): QuantizeSpec(exports=("onnx",)),
    # A Keras int8 mode is quantization-aware training and a full-int8 TFLite model (tfmot has one scheme):
    # no dynamic-range mode, so `dynamic` is refused there (it was an alias that named artifacts int8-dynamic).
    ("quantize", "static", "keras"): QuantizeSpec(exports=("tflite",)),
    ("quantize", "static-selective", "keras"): QuantizeSpec(exports=("tflite",)),
    # A smaller student trained on the dense model's logits (compress.distill), before pruning and int8.
    ("distill", "none", "any"): DistillSpec(),
    ("distill", "distill", "torch"): DistillSpec(trains=True),
    ("export", "onnx", "torch"): ExportSpec(auto=True),
    ("export", "safetensors", "torch"): ExportSpec(),
    ("export", "tflite", "keras"): ExportSpec(auto=True),
})
