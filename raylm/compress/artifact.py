"""Moved to ``raylm.artifacts`` (issue #26: the artifact format is its own layer, below compress and
serve). These names stay importable from here for code written before the move; raylm imports
``raylm.artifacts``."""

from raylm.artifacts import *  # noqa: F401,F403
from raylm.artifacts import __all__  # noqa: F401
