"""Moved to ``raylm.artifacts.architecture`` (issue #26); importable from here for code written before."""

from raylm.artifacts.architecture import (  # noqa: F401
    ArchitectureError,
    load_resized,
    resize_to,
    safetensors_shapes,
    tensor_shapes,
)
