"""Reading the int8 bitmask layout of ``raylm.artifacts.sparse`` (which writes it): the record
``artifact.json`` keeps, and the exact int8 tensors rebuilt from ``model.sparse.safetensors``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from raylm.artifacts.files import ArtifactError, confined

SPARSE_WEIGHTS = "model.sparse.safetensors"
LAYOUT = "int8-bitmask"
HEADER_KEY = "raylm.sparse_weights"  # the safetensors header entry the writer records the layout in


def sparse_weights_record(directory: Path) -> dict[str, Any] | None:
    """``artifact.json``'s ``sparse_weights`` for the bitmask file in ``directory``, read from its header; None if none."""
    from safetensors import safe_open

    path = directory / SPARSE_WEIGHTS
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = json.loads((f.metadata() or {})[HEADER_KEY])
    except Exception as err:  # safetensors' header errors, a missing or broken record
        raise ArtifactError(f"{path}: corrupted ({str(err)[:200]})") from None
    return {"layout": header["layout"], "file": SPARSE_WEIGHTS, "tensors": header["tensors"]}


def dense_initializers(directory: Path, record: dict[str, Any]) -> list[Any]:
    """The int8 tensors ``record`` (``sparse_weights``) lists, rebuilt from their bitmask and values as
    ONNX initializers. Sizes are checked against the file before anything is allocated."""
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    path = confined(directory, record["file"], "sparse_weights.file")
    if record["layout"] != LAYOUT:
        raise ArtifactError(f"{path}: layout {record['layout']!r} is not {LAYOUT!r}")
    try:
        stored = load_file(str(path))
    except Exception as err:  # safetensors' own errors for truncated or corrupted files
        raise ArtifactError(f"{path}: corrupted ({str(err)[:200]})") from None
    expected = {f"{name}.{part}" for name in record["tensors"] for part in ("mask", "values")}
    if set(stored) != expected:
        raise ArtifactError(f"{path}: holds other tensors than sparse_weights lists "
                            f"({sorted(set(stored) ^ expected)[:4]})")
    out = []
    for name, tensor in record["tensors"].items():
        shape, nonzero = [int(d) for d in tensor["shape"]], int(tensor["nonzero"])
        size = int(np.prod(shape, dtype=np.int64))
        mask, values = stored[f"{name}.mask"], stored[f"{name}.values"]
        if (min(shape, default=1) < 0 or mask.dtype != np.uint8 or mask.shape != ((size + 7) // 8,)
                or values.dtype != np.int8 or values.shape != (nonzero,)):
            raise ArtifactError(f"{path}: {name} does not match its shape {shape} and {nonzero} kept values")
        keep = np.unpackbits(mask, count=size).astype(bool)
        if int(keep.sum()) != nonzero or np.unpackbits(mask)[size:].any():
            raise ArtifactError(f"{path}: {name}'s bitmask does not mark {nonzero} kept values")
        flat = np.zeros(size, np.int8)
        flat[keep] = values
        out.append(numpy_helper.from_array(flat.reshape(shape), name))
    return out


def with_sparse_weights(model: Any, directory: Path, record: dict[str, Any]) -> Any:
    """``model`` (an ONNX ModelProto) with the int8 tensors of its bitmask file added back as initializers:
    each must be a tensor the graph's nodes read and does not already hold."""
    graph = model.graph
    held = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    read = {name for node in graph.node for name in node.input}
    for tensor in dense_initializers(directory, record):
        if tensor.name in held or tensor.name not in read:
            raise ArtifactError(f"{directory / record['file']}: {tensor.name!r} is not a weight the graph lacks")
        graph.initializer.append(tensor)
    return model
