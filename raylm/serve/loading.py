"""What a serve command is given, checked before anything is deployed: artifact directories -> tiers of
one model, and a raylm YAML plus ``serve.key=value`` overrides -> the ``serve`` section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from raylm.config import ConfigError, RaylmConfig, ServeConfig, merge, parse_overrides


def resolve_tiers(artifacts: list[str]) -> dict[str, dict[str, Any]]:
    """``["int8=/a/b", "/a/c"]`` -> {tier: {"path", "meta"}}; all tiers must be one model's variants."""
    from raylm.artifacts import ArtifactError, read_meta, verify_files
    from raylm.storage import NotCommitted, is_uri, localize

    if not artifacts:
        raise ConfigError("--artifact: at least one artifact directory is required")
    tiers: dict[str, dict[str, Any]] = {}
    for entry in artifacts:
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = "", entry
        # A URI stays the tier's path (each replica reads it through its node's cache); a local path is resolved.
        path = path if is_uri(path) else str(Path(path).expanduser().resolve())
        try:
            local = localize(path)
            meta = read_meta(local)
            # Its files as listed (present, sha256): a replica found a missing or corrupted one only after
            # Ray's start, and the console said "Deploying application raylm failed" without why.
            verify_files(local, meta)
        except (ArtifactError, NotCommitted, FileNotFoundError) as err:
            raise ConfigError(f"--artifact: {err}") from None
        name = name or meta.get("recipe", {}).get("variant") or path.rstrip("/").rsplit("/", 1)[-1]
        if name in tiers:
            raise ConfigError(f"--artifact: tier name {name!r} given twice (name them: --artifact NAME=DIR)")
        tiers[name] = {"path": path, "meta": meta}
    first_name, first = next(iter(tiers.items()))
    for name, tier in tiers.items():
        for key in ("task", "labels", "inputs", "preprocessing"):
            if tier["meta"].get(key) != first["meta"].get(key):
                raise ConfigError(f"--artifact: tier {name!r} differs from {first_name!r} in '{key}': "
                                  "tiers must be variants of one model (serve other models as other applications)")
    return tiers


def load_serve_config(config: str | None = None, overrides: list[str] | None = None) -> ServeConfig:
    """The ``serve`` section of a raylm YAML (optional) plus ``serve.key=value`` overrides."""
    import yaml

    tree: dict[str, Any] = {}
    if config:
        path = Path(config).expanduser()
        if not path.is_file():
            raise ConfigError(f"--config: no such file: {path}")
        tree = yaml.safe_load(path.read_text()) or {}
    tree = merge(tree, parse_overrides(list(overrides or [])))
    unknown = sorted(set(tree) - {"serve"} - set(_OTHER_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}: serving reads only 'serve.*'")
    section = dict(tree.get("serve") or {})
    if "api_key_env" in section and section["api_key_env"] is None:
        # YAML reads `~` and `null` as None: a typo must not switch the key off unnoticed.
        raise ConfigError("invalid raylm config:\n  serve.api_key_env: null (YAML `~`) would serve without an API key; "
                          "leave serve.api_key_env out to serve without one, or name an environment variable")
    if "limits" not in section and isinstance(tree.get("data"), dict) and "limits" in tree["data"]:
        section["limits"] = tree["data"]["limits"]  # a run YAML: serve with the limits its data was read with
    try:
        return ServeConfig.model_validate(section)
    except ValidationError as err:
        lines = [f"  serve.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        raise ConfigError("invalid raylm config:\n" + "\n".join(lines)) from None


# A full run YAML (a sweep's or a pipeline's too) is accepted as is: serving reads its serve section.
_OTHER_SECTIONS = tuple(name for name in RaylmConfig.model_fields if name != "serve")
