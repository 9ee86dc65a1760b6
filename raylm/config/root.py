"""``RaylmConfig``, the whole config with its cross-section rules, and loading it: YAML plus ``key=value`` overrides."""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, model_validator

from raylm.config.augment import AugmentConfig
from raylm.config.compress import CompressConfig
from raylm.config.data import DataConfig, TaskConfig
from raylm.config.section import ConfigError, Section
from raylm.config.serve import ServeConfig
from raylm.config.tracking import TrackingConfig
from raylm.config.train import ModelConfig, TrainConfig
from raylm.config.tune import PipelineConfig, TuneConfig, check_population
from raylm.errors import RaylmError
from raylm.storage import StoragePath, is_uri, scratch_dir
from raylm.registry import COMPRESSION_METHODS, DATASETS, MODELS


class RaylmConfig(Section):
    task: TaskConfig
    data: DataConfig = DataConfig()
    model: ModelConfig
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    compress: CompressConfig = CompressConfig()
    serve: ServeConfig = ServeConfig()
    tune: TuneConfig = TuneConfig()
    pipeline: PipelineConfig = PipelineConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _resolve(self) -> RaylmConfig:
        # The registries' declarations are plain data: validating imports no model or compression module.
        modality = self.task.modality
        MODELS.check(modality, self.model.name, self.model.backend, field="model.name")
        MODELS.check_kwargs(modality, self.model.name, self.model.backend, self.model.kwargs, field="model.kwargs")
        if self.data.path is None:
            if self.data.name is None:
                object.__setattr__(self.data, "name", DATASETS.default(modality))
            DATASETS.check(modality, self.data.name, "any", field="data.name")
        if (self.train.storage_shared and "cache_dir" not in self.data.model_fields_set
                and not is_uri(self.train.storage_path)):
            # A shared mount declared: the demo sets are generated there too, where every node reads them
            # (the default ~/.cache/raylm is the driver's disk, which the paths check no longer refuses then).
            object.__setattr__(self.data, "cache_dir", str(Path(self.train.storage_path).expanduser() / ".cache"))
        self._check_compress_for_backend()
        check_population(self)
        if self.train.name is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            object.__setattr__(self.train, "name", f"{modality}-{self.model.name}-{stamp}")
        return self

    def _check_compress_for_backend(self) -> None:
        """The compression methods by name (declared per backend), and the rules between them:
        checked here, so before Ray starts and for every value of a sweep's space (``check_space``
        validates each), not after a trial trained."""
        recipe, backend = self.compress, self.model.backend
        pruner = COMPRESSION_METHODS.spec("prune", recipe.prune.method, backend, field="compress.prune.method")
        quantizer = COMPRESSION_METHODS.spec("quantize", recipe.quantize.mode, backend, field="compress.quantize.mode")
        distiller = COMPRESSION_METHODS.spec("distill", recipe.distill.method, backend, field="compress.distill.method")
        if distiller.trains and recipe.distill.epochs < 1:
            raise ValueError("compress.distill.epochs: the distill student is trained: at least 1 epoch")
        if recipe.export != "auto":
            COMPRESSION_METHODS.check("export", recipe.export, backend, field="compress.export")
        if recipe.export != "auto" and recipe.quantize.mode != "none" and recipe.export not in quantizer.exports:
            raise ValueError(f"compress.export: int8 models are exported as {' or '.join(quantizer.exports)} "
                             f"(set export={quantizer.exports[0]} or auto)")
        if recipe.vocabulary != "full" and (self.task.modality != "text" or backend != "torch"
                                            or recipe.export not in ("auto", "onnx")):
            raise ValueError("compress.vocabulary: only a torch text model exported as ONNX has its vocabulary "
                             "shrunk (the id lookup lives in the ONNX graph)")
        if pruner.needs_finetune and pruner.removes(recipe.prune) and recipe.finetune_epochs < 1:
            raise ValueError(f"compress.finetune_epochs: {backend}'s {recipe.prune.method} pruning prunes while "
                             "fine-tuning: at least 1 epoch when it removes weights")

    def override(self, changes: dict[str, Any] | list[str]) -> RaylmConfig:
        """A validated copy with ``changes``: ``{"train.epochs": 3, "model": {...}}`` (dotted paths;
        a section's dict merges into it) or CLI-style ``["train.epochs=3"]``. ConfigError names the field."""
        return validate_config(merge(self.to_dict(), _changes_tree(changes)))

    @classmethod
    def from_saved(cls, tree: dict[str, Any], *, labels: list[str] | None = None,
                   changes: dict[str, Any] | list[str] = ()) -> RaylmConfig:
        """The config a checkpoint or artifact recorded, made to run again: its labels fixed, no
        ``train.resume_from``, then ``changes`` (before validation, so a moved ``data.path`` can be fixed)."""
        tree = json.loads(json.dumps(tree))
        tree.setdefault("train", {})["resume_from"] = None
        if labels is not None:
            tree.setdefault("task", {})["labels"] = list(labels)
        return validate_config(merge(tree, _changes_tree(changes)))

    @property
    def run_location(self) -> StoragePath:
        """``<storage_path>/<run name>`` in storage (local path or URI): every stage of one run writes below it."""
        return StoragePath.of(self.train.storage_path, self.train.storage_options).join(str(self.train.name))

    @property
    def run_dir(self) -> Path:
        """The run's local directory: ``<storage_path>/<run name>`` for local storage; for a URI, the
        scratch of the open ``raylm.storage.run_workspace`` (never a local path made of the URI)."""
        location = self.run_location
        if location.is_local:
            return location.local_path
        scratch = scratch_dir(location)
        if scratch is None:
            raise RaylmError(f"train.storage_path: {location} is object storage; this step needs the run's "
                             "workspace (raylm.storage.run_workspace(cfg.run_location))")
        return scratch

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


SPACE_PREFIX = "tune.space."  # tune.space's keys are dotted paths themselves (``train.lr``)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    # ``tune.space.train.lr={loguniform: [...]}`` sets the space's one key "train.lr" (split at every dot it was
    # "tune.space.train.lr: Extra inputs are not permitted", though train.lr is a key the space takes).
    keys = ["tune", "space", dotted[len(SPACE_PREFIX):]] if dotted.startswith(SPACE_PREFIX) else dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def _changes_tree(changes: dict[str, Any] | list[str] | tuple[str, ...]) -> dict[str, Any]:
    if isinstance(changes, (list, tuple)):
        return parse_overrides(list(changes))
    tree: dict[str, Any] = {}
    for dotted, value in changes.items():
        _set_dotted(tree, dotted, value)
    return tree


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.lr=3e-4", "task.labels=[a,b]"]`` -> nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not key=value (e.g. train.lr=3e-4)")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        # the value, unless the message already shows it ("no such file or directory: /x (got '/x')")
        got = (f" (got {e['input']!r})" if e["type"] != "missing" and not isinstance(e["input"], dict)
               and str(e["input"]) not in msg else "")
        if e["type"] == "value_error" and (not field or msg.startswith(f"{field}.")):  # a rule naming its fields
            lines.append(f"  {msg}")
        else:
            hint = _did_you_mean(e["loc"]) if e["type"] == "extra_forbidden" else ""
            lines.append(f"  {field or '<config>'}: {e['msg']}{got}{hint}")
    return "invalid raylm config:\n" + "\n".join(lines)


def _did_you_mean(loc: tuple) -> str:
    """For a key no section has (``train.epoch``): the nearest key of its section, if one is near."""
    import difflib

    section: Any = RaylmConfig
    for part in loc[:-1]:
        field = getattr(section, "model_fields", {}).get(part)
        section = field.annotation if field is not None else None
        if not (isinstance(section, type) and issubclass(section, Section)):
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {'.'.join(map(str, (*loc[:-1], close[0])))}?)" if close else ""


def validate_config(tree: dict[str, Any]) -> RaylmConfig:
    try:
        return RaylmConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> RaylmConfig:
    """Read YAML (optional), apply ``key=value`` overrides, validate."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"--config: no such file: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"--config: {p} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config: {p} must hold a mapping of sections")
        tree = loaded
    tree = merge(tree, parse_overrides(overrides or []))
    data = tree.get("data")
    if isinstance(data, dict) and data.get("name") is not None and data.get("path") is not None:
        print(f"raylm: data.path={data['path']} replaces the demo dataset data.name={data['name']}", file=sys.stderr)
    return validate_config(tree)
