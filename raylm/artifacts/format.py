"""ARTIFACT directories: the only thing serving loads.

Layout::

    artifact.json       format, task, labels, inputs, preprocessing, architecture (builder + shapes
                        after pruning), compression recipe, lineage, measured report, file checksums
    model.safetensors   float weights (rebuilt with the registry builder, resized to the shapes)
      or model.onnx     an ONNX graph (int8 when quantized), run with ONNX Runtime
      or model.tflite   a TFLite flatbuffer (Keras backend; full int8 when quantized), run with LiteRT
    model.sparse.safetensors   format_version 2, ONNX only: mostly-zero int8 weights as a bitmask plus
                        the kept values, taken out of model.onnx and rebuilt exactly at load
                        (``raylm.artifacts.sparse``; recorded in ``sparse_weights``)
    tokenizer/          text: the tokenizer the data was encoded with
    hf_config/          text: the HF architecture config the builder starts from

``artifact.json`` is one schema for every backend (``ArtifactMeta``, versioned like a checkpoint's
``raylm.json``: ``raylm.meta``); its ``runtime`` says which of the three files serving runs. Written
into a hidden temporary sibling and renamed into place when whole; loaded from json, safetensors,
ONNX and TFLite only (no pickle); every file checked first (``raylm.artifacts.files``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, model_validator

from raylm.artifacts.files import META, ArtifactError, checksums
from raylm.artifacts.sparse_layout import SPARSE_WEIGHTS, sparse_weights_record
from raylm.meta import MetaFormatError, VersionedMeta

WEIGHTS = "model.safetensors"
ONNX = "model.onnx"
TFLITE = "model.tflite"
RuntimeName = Literal["safetensors", "onnx", "tflite"]
RUNTIME_OF_FILE = {".safetensors": "safetensors", ".onnx": "onnx", ".tflite": "tflite"}


class SparseTensor(BaseModel):
    shape: list[int]
    nonzero: int


class SparseWeights(BaseModel):
    """How ``SPARSE_WEIGHTS`` stores tensors taken out of the model file (``raylm.artifacts.sparse``)."""

    layout: Literal["int8-bitmask"]
    file: str
    tensors: dict[str, SparseTensor]


class ArtifactMeta(VersionedMeta):
    """``artifact.json``, the same for every backend and runtime. Unknown keys are kept (a report's
    extra rows, a sweep's record), the ones loading relies on are checked.

    Versions: 1, what every raylm wrote; 2 adds ``sparse_weights`` (a file the previous raylm cannot
    rebuild, so only an artifact that has one is written as version 2)."""

    KIND: ClassVar[str] = "raylm.artifact"
    VERSION: ClassVar[int] = 2

    task: dict[str, Any]
    labels: list[str]
    inputs: list[str]
    preprocessing: dict[str, Any] = {}
    architecture: dict[str, Any]
    model_file: str
    runtime: RuntimeName
    files: dict[str, Any]
    recipe: dict[str, Any] = {}
    lineage: dict[str, Any] = {}
    report: dict[str, Any] = {}
    sparse_weights: SparseWeights | None = None

    @model_validator(mode="before")
    @classmethod
    def _runtime_from_file(cls, data: Any) -> Any:
        # Artifacts written before the field existed: the model file's suffix says it.
        if isinstance(data, dict) and "runtime" not in data and isinstance(data.get("model_file"), str):
            data = dict(data, runtime=RUNTIME_OF_FILE.get(Path(data["model_file"]).suffix))
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "ArtifactMeta":
        from raylm.data import MODEL_INPUTS

        modality = self.task.get("modality")
        if modality not in MODEL_INPUTS:
            raise ValueError(f"task.modality {modality!r} is not one of {sorted(MODEL_INPUTS)}")
        if self.inputs != list(MODEL_INPUTS[modality]):
            raise ValueError(f"inputs {self.inputs!r} are not the {modality} inputs {list(MODEL_INPUTS[modality])}")
        if len(self.labels) < 2:
            raise ValueError("labels must be a list of at least 2 strings")
        if RUNTIME_OF_FILE.get(Path(self.model_file).suffix, self.runtime) != self.runtime:
            raise ValueError(f"runtime {self.runtime!r} does not run model_file {self.model_file!r}")
        if self.sparse_weights is not None and self.runtime != "onnx":
            raise ValueError(f"sparse_weights: a {self.runtime} artifact stores its weights in model_file")
        if self.sparse_weights is not None and self.format_version < 2:
            raise ValueError("sparse_weights: needs format_version 2")
        return self


FORMAT = ArtifactMeta.format_of(1)  # what an artifact without newer parts is written as


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """``artifact.json`` for the files ``directory`` holds now: their checksums, the layout of a sparse
    weights file (``raylm.artifacts.sparse``), and the lowest format version that describes them."""
    meta = {k: v for k, v in meta.items() if k not in ("format", "format_version", "sparse_weights")}
    meta["files"] = checksums(directory)
    meta.setdefault("runtime", RUNTIME_OF_FILE.get(Path(str(meta.get("model_file"))).suffix))
    layout = sparse_weights_record(directory)
    if layout is not None:
        meta["sparse_weights"] = layout
    (directory / META).write_text(json.dumps(ArtifactMeta.stamp(meta, 2 if layout else 1), indent=2))


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / META
    if not path.is_file():
        if not Path(directory).exists():
            raise ArtifactError(f"{directory}: does not exist")
        if (Path(directory) / "raylm.json").is_file():  # a training checkpoint (raylm.train.checkpoint.META)
            raise ArtifactError(f"{directory}: a training checkpoint, not an artifact; make one with "
                                f"raylm compress --checkpoint {directory}")
        raise ArtifactError(f"{directory}: not a raylm artifact (no {META})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ArtifactError(f"{path}: corrupted ({type(err).__name__})") from None
    try:
        meta = ArtifactMeta.check_version(meta, path)
    except MetaFormatError as err:
        raise ArtifactError(str(err)) from None
    for key in ("task", "labels", "inputs", "architecture", "model_file", "files"):
        if key not in meta:
            raise ArtifactError(f"{path}: corrupted (no '{key}')")
    try:
        return ArtifactMeta.parse(meta, path).model_dump()
    except MetaFormatError as err:
        raise ArtifactError(str(err)) from None


def artifact_config(directory: Path, meta: dict[str, Any]):
    """The RaylmConfig the builder needs, pointed at the files the artifact carries (and no others)."""
    from pydantic import ValidationError

    from raylm.config import RaylmConfig, format_validation_error
    from raylm.hf_sources import own_files_config

    try:
        tree = own_files_config(meta["architecture"]["config"], meta["labels"], directory)
        return RaylmConfig.model_validate(tree)
    except ValidationError as err:
        raise ArtifactError(f"{directory / META}: architecture.config is {format_validation_error(err)}") from None
    except (KeyError, TypeError, AttributeError) as err:
        raise ArtifactError(f"{directory / META}: corrupted architecture.config ({err!r})") from None


def preprocessing_record(cfg) -> dict[str, Any]:
    """How serving turns a request into model inputs: the function and settings training used."""
    from raylm.data.modality import modality_record

    return modality_record(cfg.task.modality).preprocessing(cfg)
