"""Unstructured sparsity that shrinks the file, rebuilt exactly at load.

fp32: ONNX sparse initializers. A magnitude-pruned weight stored dense costs as much as the dense
one. ONNX's ``GraphProto.sparse_initializer`` stores only the non-zero values and their linear
indices; ONNX Runtime turns them back into the exact dense tensors when it loads the graph, so the
model runs on the same fp32 kernels as the dense reference (no sparse-kernel slowdown) and its
logits are bit-identical. int32 indices (ORT accepts them; int16 it refuses) cost 4 bytes per kept
weight, so a tensor is stored sparse only where that is smaller: above 50 % zeros.

int8: a bitmask beside the graph. The same int32 indices cost 4 bytes per kept 1-byte weight: an
80 % sparse int8 tensor would not shrink at all (0.2 x 5 bytes = its dense byte). Instead a
mostly-zero int8 initializer is taken out of ``model.onnx`` into ``model.sparse.safetensors`` as one
bit per element (kept or zero) plus the kept values, 1/8 + (1 - sparsity) bytes per element: 0.33x
of the int8 tensor at 80 %, 0.23x at 90 %. The loader expands them into the exact int8 tensors and
hands ONNX Runtime the whole graph, which runs the same int8 kernels as the dense-layout file. The
layout is recorded in ``artifact.json`` (``sparse_weights``, format_version 2); a writer checks the
rebuilt tensors are equal to the originals and, given inputs, that the logits are too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from raylm.artifacts.files import ArtifactError
from raylm.artifacts.sparse_layout import (
    HEADER_KEY,
    LAYOUT,
    SPARSE_WEIGHTS,
    dense_initializers,
    sparse_weights_record,
    with_sparse_weights,
)

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
        _save(model, Path(path))
    return converted


def _save(model: Any, path: Path) -> None:
    import onnx

    tmp = Path(f"{path}.sparse-tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def store_sparse_int8(path: str | os.PathLike[str], feeds: dict[str, np.ndarray] | None = None,
                      threads: int = 1) -> dict[str, Any]:
    """Move the int8 initializers of the ONNX file ``path`` that a bitmask stores in fewer bytes into
    ``SPARSE_WEIGHTS`` beside it. Checks the rebuilt tensors equal the originals and, with ``feeds``,
    that the rebuilt graph's logits equal the dense-layout file's. Returns report entries."""
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import save_file

    path = Path(path)
    model = onnx.load(str(path))
    originals, stored, tensors = {}, {}, {}
    for init in list(model.graph.initializer):
        if init.data_type != onnx.TensorProto.INT8:
            continue
        dense = numpy_helper.to_array(init)
        flat = dense.ravel()
        keep = flat != 0
        mask = np.packbits(keep)
        if dense.size < MIN_ELEMENTS or mask.nbytes + int(keep.sum()) >= flat.nbytes:
            continue
        originals[init.name] = dense
        stored[f"{init.name}.mask"], stored[f"{init.name}.values"] = mask, flat[keep]
        tensors[init.name] = {"shape": list(dense.shape), "nonzero": int(keep.sum())}
        model.graph.initializer.remove(init)
    if not tensors:
        return {"sparse_int8_tensors": 0}
    dense_layout = path.read_bytes() if feeds is not None else None
    sidecar = path.parent / SPARSE_WEIGHTS
    save_file(stored, str(sidecar), metadata={HEADER_KEY: json.dumps({"layout": LAYOUT, "tensors": tensors})})
    _save(model, path)
    record = sparse_weights_record(path.parent)
    rebuilt = {t.name: numpy_helper.to_array(t) for t in dense_initializers(path.parent, record)}
    for name, dense in originals.items():
        if rebuilt[name].dtype != dense.dtype or not np.array_equal(rebuilt[name], dense):
            raise ArtifactError(f"{sidecar}: {name} is not rebuilt exactly from the bitmask layout")
    report: dict[str, Any] = {"sparse_int8_tensors": len(tensors), "sparse_layout": LAYOUT}
    if feeds is not None:
        from raylm.artifacts.onnx_runtime import onnx_session

        def logits(source: bytes) -> np.ndarray:
            session = onnx_session(source, threads)
            return session.run(["logits"], {i.name: feeds[i.name] for i in session.get_inputs()})[0]

        reference = logits(dense_layout)
        candidate = logits(with_sparse_weights(onnx.load(str(path)), path.parent, record).SerializeToString())
        if not np.array_equal(candidate, reference):
            raise ArtifactError(f"{sidecar}: the rebuilt graph's logits differ from the dense-layout int8 file's "
                                f"(max {float(np.abs(candidate - reference).max())})")
        report |= {"sparse_int8_parity_rows": int(len(reference)), "sparse_int8_max_abs_diff": 0.0}
    return report
