"""Unstructured sparsity that shrinks the file: ONNX sparse initializers.

A magnitude-pruned weight stored dense costs as much as the dense one. ONNX's
``GraphProto.sparse_initializer`` stores only the non-zero values and their linear indices;
ONNX Runtime turns them back into the exact dense tensors when it loads the graph, so the model
runs on the same fp32 kernels as the dense reference (no sparse-kernel slowdown) and its logits
are bit-identical. int32 indices (ORT accepts them; int16 it refuses) cost 4 bytes per kept
weight, so a tensor is stored sparse only where that is smaller: above 50 % zeros.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MIN_ELEMENTS = 1024  # biases and tiny kernels: the bookkeeping is not worth it


def sparsify_onnx(path: str | os.PathLike[str], min_zero_fraction: float = 0.5) -> int:
    """Rewrite ``path`` in place with its mostly-zero float initializers stored sparse; returns how many."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    converted = 0
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        dense = numpy_helper.to_array(init)
        if dense.size < MIN_ELEMENTS or (dense == 0).mean() <= min_zero_fraction:
            continue
        flat = dense.ravel()
        nonzero = np.flatnonzero(flat)
        values = numpy_helper.from_array(flat[nonzero], init.name)
        indices = numpy_helper.from_array(nonzero.astype(np.int32), f"{init.name}__indices")
        graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, list(dense.shape)))
        graph.initializer.remove(init)
        converted += 1
    if converted:
        tmp = Path(f"{path}.sparse-tmp")
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    return converted
