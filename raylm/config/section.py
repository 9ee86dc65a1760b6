"""What every section shares: strict pydantic models, the config error, plain run names."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from raylm.errors import RaylmError



class ConfigError(RaylmError):
    """A config that cannot run; the message names every offending field."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# A name that becomes one directory under a run: never a path, never hidden, never "..".
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def plain_name(value: str) -> str:
    """``value`` if it is a plain directory name (letters, digits, ``._-``; not hidden, no ``/``)."""
    if not _PLAIN_NAME.fullmatch(value):
        raise ValueError("must be a plain directory name of letters, digits, '.', '_' and '-', "
                         "not starting with '.'")
    return value


PlainName = Annotated[str, AfterValidator(plain_name)]
