"""Moved to ``raylm.artifacts.sparse`` (issue #26); importable from here for code written before."""

from raylm.artifacts.sparse import MIN_ELEMENTS, sparsify_onnx, store_sparse_int8  # noqa: F401
