"""The ONNX Runtime runtime: sessions for ``model.onnx`` (fp32 or int8), with the sparse int8 weights
of ``raylm.artifacts.sparse`` put back in before the session is built."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from raylm.artifacts.files import ArtifactError
from raylm.artifacts.sparse_layout import with_sparse_weights


def onnx_session(model: str | os.PathLike[str] | bytes, threads: int = 1):
    """A CPU session for an ONNX file (a path) or a serialized graph (bytes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_predictor(path: str | os.PathLike[str], threads: int = 1):
    """``predict(feeds) -> logits`` of an ONNX file on ONNX Runtime."""
    session = onnx_session(path, threads)
    names = [i.name for i in session.get_inputs()]
    return lambda feeds: session.run(["logits"], {n: feeds[n] for n in names})[0]


def refuse_external_data(model_file: Path) -> Any:
    """ONNX tensors may name an external file to read their data from, anywhere on disk: raylm
    writes none, so a graph that has any is refused before ONNX Runtime follows the name. Returns the graph."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    try:
        graph = onnx.load(str(model_file), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and onnx's own types
        raise ArtifactError(f"{model_file}: corrupted ({str(err)[:200]})") from None
    sparse = [t for sp in graph.graph.sparse_initializer for t in (sp.values, sp.indices)]
    if any(uses_external_data(tensor) for tensor in [*_get_all_tensors(graph), *sparse]):
        raise ArtifactError(f"{model_file}: names external tensor data; an artifact's graph must hold its own weights")
    return graph


class OnnxRuntime:
    """``Runtime`` over an ONNX Runtime session; feeds named as the graph's inputs."""

    name = "onnx"

    def __init__(self, session: Any, inputs: tuple[str, ...]) -> None:
        self.session, self.inputs = session, inputs

    def predict(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["logits"], {name: feeds[name] for name in self.inputs})[0]


def load_onnx(directory: Path, meta: dict[str, Any], model_file: Path, threads: int) -> OnnxRuntime:
    graph = refuse_external_data(model_file)
    sparse = meta.get("sparse_weights")
    source: str | Path | bytes = model_file
    if sparse:
        source = with_sparse_weights(graph, directory, sparse).SerializeToString()
    try:
        session = onnx_session(source, threads)
    except Exception as err:  # ORT raises its own types for invalid graphs
        raise ArtifactError(f"{model_file}: corrupted ({str(err)[:300]})") from None
    return OnnxRuntime(session, tuple(meta["inputs"]))
