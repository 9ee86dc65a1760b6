"""One versioned base for the metadata files raylm writes beside weights: a checkpoint's
``raylm.json`` (``raylm.train.checkpoint``) and an artifact's ``artifact.json`` (``raylm.artifacts``).

Both carry ``format: "<kind>/<version>"`` (what every raylm has written) and ``format_version``
(the same version as a number, added with this module). A file is read if its kind matches and its
version is one this raylm knows; a file written by a newer raylm is refused with a message naming
the file and both versions, never half-read. A file of an older version is brought up to date by
the model's ``upgrade`` before validation, so runs written by the previous raylm keep loading.
Writers record the lowest version that describes what they wrote (an artifact without a newer
layout stays version 1), so the previous raylm still reads what it can read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class MetaFormatError(ValueError):
    """A metadata file of another kind, another version, or a broken one; the message names the file."""


class VersionedMeta(BaseModel):
    """``format`` and ``format_version``; subclasses name their ``KIND`` and newest ``VERSION``.

    Unknown keys are kept (a report's extra rows, a sweep's record): what loading relies on is typed.
    """

    model_config = ConfigDict(extra="allow")

    KIND: ClassVar[str] = ""  # e.g. "raylm.checkpoint"
    VERSION: ClassVar[int] = 1  # the newest format_version this raylm reads and writes

    format: str
    format_version: int

    @model_validator(mode="before")
    @classmethod
    def _version_from_format(cls, data: Any) -> Any:
        # Files written before format_version existed carry the version only in "format".
        if isinstance(data, dict) and "format_version" not in data and isinstance(data.get("format"), str):
            kind, _, version = data["format"].partition("/")
            if version.isdigit():
                data = dict(data, format_version=int(version))
        return data

    @classmethod
    def format_of(cls, version: int | None = None) -> str:
        return f"{cls.KIND}/{version or cls.VERSION}"

    @classmethod
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """A file of an older ``version`` as the current model reads it (override per kind)."""
        return data

    @classmethod
    def check_version(cls, data: Any, where: str | Path) -> dict[str, Any]:
        """``data`` (a parsed JSON file at ``where``) upgraded to the current version, or ``MetaFormatError``."""
        if not isinstance(data, dict):
            raise MetaFormatError(f"{where}: format {type(data).__name__!r}, expected {cls.format_of()!r}")
        found = data.get("format")
        kind, _, suffix = found.partition("/") if isinstance(found, str) else ("", "", "")
        if kind != cls.KIND or not suffix.isdigit() or int(suffix) < 1:
            raise MetaFormatError(f"{where}: format {found!r}, expected {cls.format_of()!r}")
        version = int(suffix)
        if data.get("format_version", version) != version:
            raise MetaFormatError(f"{where}: format_version {data.get('format_version')!r} does not match "
                                  f"format {found!r}")
        if version > cls.VERSION:
            raise MetaFormatError(f"{where}: written by a newer raylm (format {found!r}); this raylm reads "
                                  f"{cls.KIND} up to format_version {cls.VERSION}: upgrade raylm to load it")
        return cls.upgrade(dict(data, format_version=version), version)

    @classmethod
    def parse(cls, data: Any, where: str | Path):
        """``check_version`` then validation; every problem is a ``MetaFormatError`` naming ``where``."""
        data = cls.check_version(data, where)
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in err.errors())
            raise MetaFormatError(f"{where}: corrupted ({reasons})") from None

    @classmethod
    def stamp(cls, data: dict[str, Any], version: int | None = None) -> dict[str, Any]:
        """``data`` with this kind's ``format`` and ``format_version`` (default: the newest)."""
        version = version or cls.VERSION
        return dict(data, format=cls.format_of(version), format_version=version)
