"""The search space: dotted config paths checked against the config schema, then turned into
Ray Tune distributions. Every problem is found here, before a trial (or Ray) starts."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from raylm.config import ConfigError, Modality, RaylmConfig, SearchDimension, _set_dotted, merge, validate_config

# A sweep's trials must share these: they decide where a trial writes and what it learns.
_FIXED = ("task", "tune", "pipeline", "train.name", "train.storage_path", "train.resume_from", "serve")


def _field_kind(path: str) -> str:
    """'leaf', or raises naming the first unknown key; keys under a dict field (model.kwargs) are free."""
    node: type[BaseModel] | None = RaylmConfig
    keys = path.split(".")
    for i, key in enumerate(keys):
        if node is None:  # inside a free-form dict
            return "leaf"
        fields = node.model_fields
        if key not in fields:
            known = ", ".join(sorted(fields))
            where = ".".join(keys[:i]) or "the config"
            raise ConfigError(f"tune.space.{path}: unknown field '{key}' in {where} (fields: {known})")
        annotation = fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            node = annotation
        elif typing.get_origin(annotation) is dict:
            node = None
        elif i < len(keys) - 1:
            raise ConfigError(f"tune.space.{path}: '{'.'.join(keys[:i + 1])}' is a value, not a section")
        else:
            return "leaf"
    raise ConfigError(f"tune.space.{path}: is a whole section; search one of its fields "
                      f"(e.g. {path}.{next(iter(node.model_fields))})")


def _candidates(dim: SearchDimension) -> list[Any]:
    """Values that must all give a valid config: every choice, or both ends of a range."""
    if dim.kind in ("choice", "grid"):
        return list(dim.values)
    low, high = dim.values
    return [low, high - 1] if dim.kind == "randint" else [low, high]


def check_space(cfg: RaylmConfig) -> None:
    """Raise ConfigError naming ``tune.space.<path>`` for unknown fields, fixed fields and values
    the config would reject (e.g. ``compress.prune.sparsity: {uniform: [0, 1.5]}``)."""
    space = cfg.tune.space
    if not space:
        raise ConfigError("tune.space: empty; give at least one dimension, e.g. "
                          "tune.space={train.lr: {loguniform: [1e-4, 1e-2]}}")
    base = cfg.to_dict()
    base["tune"]["space"] = {}
    for path, dim in space.items():
        for fixed in _FIXED:
            if path == fixed or path.startswith(fixed + "."):
                raise ConfigError(f"tune.space.{path}: {fixed} is fixed for a whole sweep and cannot be searched")
        parts = path.split(".")
        if parts[0] == "augment" and len(parts) > 2 and parts[1] in typing.get_args(Modality) and parts[1] != cfg.task.modality:
            # Validated (the section exists) but never read: searched for nothing, and a PBT schedule holding it
            # was refused by the retrain that replays it.
            raise ConfigError(f"tune.space.{path}: {parts[1]} augmentation, but this sweep trains "
                              f"{cfg.task.modality} data (augment.{cfg.task.modality}.*)")
        _field_kind(path)
        for value in _candidates(dim):
            tree: dict[str, Any] = {}
            _set_dotted(tree, path, value)
            try:
                validate_config(merge(base, tree))
            except ConfigError as err:
                detail = str(err).removeprefix("invalid raylm config:\n").strip()
                raise ConfigError(f"tune.space.{path}: {dim.kind} value {value!r} is not valid: {detail}") from None


def tune_param_space(cfg: RaylmConfig) -> dict[str, Any]:
    """``{dotted path: ray.tune distribution}``; dotted keys stay flat so results name the fields."""
    from ray import tune

    makers = {"uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v),
              "randint": lambda v: tune.randint(*v), "choice": lambda v: tune.choice(list(v)),
              "grid": lambda v: tune.grid_search(list(v))}
    from raylm.tune.population import starting_values

    return {path: makers[dim.kind](dim.values) for path, dim in cfg.tune.space.items()} | starting_values(cfg)


def trial_config(base: dict[str, Any], params: dict[str, Any], *, storage_path: str, name: str) -> RaylmConfig:
    """The base config with one trial's sampled values, writing under ``<storage_path>/<name>``."""
    tree: dict[str, Any] = {}
    for path, value in params.items():
        _set_dotted(tree, path, value)
    tree = merge(base, tree)
    tree["train"] |= {"storage_path": storage_path, "name": name, "resume_from": None}
    tree["tune"]["space"] = {}
    return validate_config(tree)
