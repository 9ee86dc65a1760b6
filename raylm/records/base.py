"""What every record that crosses a stage boundary shares: unknown keys refused where the record is
built (a typo fails there, not in the report), a ``record_version`` on each file, and a reader that
names the file and the field it refuses.

Compatibility rule: a reader accepts every version up to its own (``record_version`` absent: 0, the
unversioned files raylm wrote before the records existed, which have the same fields) and refuses a
newer one with a message naming the file, the version found and the version it reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError, field_validator

from raylm.errors import RaylmError

# A value a config path takes in a sweep (``params``): what YAML and Tune sample (a ``choice`` may
# be a list or a mapping, e.g. ``model.kwargs.channels: {choice: [[8, 16], [16, 32]]}``).
ParamValue = JsonValue


class RecordError(RaylmError, ValueError):
    """A record file cannot be read: its field is missing or mistyped, or a newer raylm wrote it."""


class Record(BaseModel):
    """A typed record: unknown keys are refused (at build and at read), assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class VersionedRecord(Record):
    """A record written as a file of its own (``pipeline.json``, ``trials.json``, a compress report)."""

    RECORD_VERSION: ClassVar[int] = 1
    record_version: int = 1

    @field_validator("record_version")
    @classmethod
    def _readable(cls, version: int) -> int:
        if version > cls.RECORD_VERSION:
            raise ValueError(f"written by a newer raylm (record_version {version}); this raylm reads "
                             f"record_version <= {cls.RECORD_VERSION}: upgrade raylm to read it")
        return version

    def to_json(self) -> dict[str, object]:
        """The record as its file holds it, at this raylm's version (an older record read and written
        back is upgraded: the fields are the same)."""
        out = self._dump()
        out["record_version"] = self.RECORD_VERSION
        return out

    def _dump(self) -> dict[str, object]:
        return self.model_dump(mode="json")


R = TypeVar("R", bound=VersionedRecord)


def _where(err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{field}: {first['msg']}" + (f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else "")


def parse_record(model: type[R], data: Any, source: str) -> R:
    """``data`` (a file's parsed JSON) as ``model``; a file without ``record_version`` is version 0.
    Refused with ``RecordError`` naming ``source`` and the field."""
    if not isinstance(data, dict):
        raise RecordError(f"{source}: expected a JSON object, found {type(data).__name__}")
    try:
        return model.model_validate({"record_version": 0} | data)
    except ValidationError as err:
        raise RecordError(f"{source}: {_where(err)}") from None


def read_record(model: type[R], path: str | Path) -> R:
    """The record in ``path``, validated (see :func:`parse_record`)."""
    try:
        data = json.loads(Path(path).read_text())
    except ValueError as err:
        raise RecordError(f"{path}: not JSON ({err})") from None
    return parse_record(model, data, str(path))
