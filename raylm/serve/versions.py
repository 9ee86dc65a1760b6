"""The version of each served tier, for the Open Inference Protocol's ``/v2/models/{name}/versions/{version}``.

A tier's version is the registry's version where there is one (``serve.versions`` or a tier resolved with a
``version``, which ``raylm serve --model models:/<name>/<version>`` fills), else the first 12 hex digits of
a hash of the artifact's file checksums: it names the bytes served, so two different artifacts served under
one tier name never answer as the same version, and the same artifact always does.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from raylm.config import ConfigError, ServeConfig

CONTENT_VERSION_CHARS = 12
# The version is a path segment: no '/', nothing that needs escaping.
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def content_version(meta: dict[str, Any]) -> str:
    """The short content hash of an artifact: sha256 over its sorted ``files`` checksums."""
    files = json.dumps(meta.get("files") or {}, sort_keys=True).encode()
    return hashlib.sha256(files).hexdigest()[:CONTENT_VERSION_CHARS]


def tier_versions(tiers: dict[str, dict[str, Any]], cfg: ServeConfig) -> dict[str, str]:
    """{tier: version}: ``serve.versions`` first, then the tier's own ``version`` (a registry's), then the content hash."""
    unknown = sorted(set(cfg.versions) - set(tiers))
    if unknown:
        raise ConfigError(f"serve.versions: {unknown} are not tiers; the tiers are {sorted(tiers)}")
    versions = {}
    for name, tier in tiers.items():
        version = str(cfg.versions.get(name) or tier.get("version") or content_version(tier["meta"]))
        if not _VERSION.fullmatch(version):
            raise ConfigError(f"serve.versions.{name}: {version!r} is not a plain version (letters, digits, '._-')")
        versions[name] = version
    return versions
