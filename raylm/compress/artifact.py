"""ARTIFACT directories: the only thing serving loads.

Layout::

    artifact.json       format, task, labels, inputs, preprocessing, architecture (builder + shapes
                        after pruning), compression recipe, lineage, measured report, file checksums
    model.safetensors   float weights (rebuilt with the registry builder, resized to the shapes)
      or model.onnx     an ONNX graph (int8 when quantized), run with ONNX Runtime
      or model.tflite   a TFLite flatbuffer (Keras backend; full int8 when quantized), run with LiteRT
    tokenizer/          text: the tokenizer the data was encoded with
    hf_config/          text: the HF architecture config the builder starts from

``artifact.json`` is one schema for every backend (``ArtifactMeta``); its ``runtime`` says which
of the three files serving runs. Written into a hidden temporary sibling and renamed into place
when whole; loaded from json, safetensors, ONNX and TFLite only (no pickle). An artifact may come
from elsewhere, so it is data, never code: every file of the tree must be listed in ``files`` and
match its sha256 (an empty list, an unlisted file, a link or a name leading outside the directory
is refused), the builder gets only the arguments it declares, and Hugging Face files load offline
without remote code.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from raylm.errors import RaylmError
from raylm.storage.commit import sha256_file

FORMAT = "raylm.artifact/1"
META = "artifact.json"
WEIGHTS = "model.safetensors"
ONNX = "model.onnx"
TFLITE = "model.tflite"
Runtime = Literal["safetensors", "onnx", "tflite"]
RUNTIME_OF_FILE = {".safetensors": "safetensors", ".onnx": "onnx", ".tflite": "tflite"}


class ArtifactError(RaylmError):
    """An artifact that cannot be loaded; the message names the file and what is wrong."""


class ArtifactMeta(BaseModel):
    """``artifact.json``, the same for every backend and runtime. Unknown keys are kept (a report's
    extra rows, a sweep's record), the ones loading relies on are checked."""

    model_config = ConfigDict(extra="allow")

    format: Literal["raylm.artifact/1"]
    task: dict[str, Any]
    labels: list[str]
    inputs: list[str]
    preprocessing: dict[str, Any] = {}
    architecture: dict[str, Any]
    model_file: str
    runtime: Runtime
    files: dict[str, Any]
    recipe: dict[str, Any] = {}
    lineage: dict[str, Any] = {}
    report: dict[str, Any] = {}

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
        return self


sha256 = sha256_file  # one file hash for artifacts and storage commit markers


def checksums(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): sha256(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != META}


def confined(directory: Path, name: Any, what: str) -> Path:
    """``directory / name`` if ``name`` is a relative path that stays inside ``directory``, through no link."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise ArtifactError(f"{directory / META}: {what} {name!r} is not a relative file name")
    parts = Path(name).parts
    if Path(name).is_absolute() or any(part in ("..", ".") for part in parts):
        raise ArtifactError(f"{directory / META}: {what} {name!r} leads outside the artifact directory")
    path = directory
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise ArtifactError(f"{path}: a link; an artifact holds plain files only")
    return path


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    meta = dict(meta, format=FORMAT, files=checksums(directory))
    meta.setdefault("runtime", RUNTIME_OF_FILE.get(Path(str(meta.get("model_file"))).suffix))
    (directory / META).write_text(json.dumps(meta, indent=2))


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / META
    if not path.is_file():
        raise ArtifactError(f"{directory}: not a raylm artifact (no {META})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ArtifactError(f"{path}: corrupted ({type(err).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ArtifactError(f"{path}: format {found!r}, expected {FORMAT!r}")
    for key in ("task", "labels", "inputs", "architecture", "model_file", "files"):
        if key not in meta:
            raise ArtifactError(f"{path}: corrupted (no '{key}')")
    try:
        return ArtifactMeta.model_validate(meta).model_dump()
    except ValidationError as err:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'artifact'}: {e['msg']}" for e in err.errors())
        raise ArtifactError(f"{path}: {reasons}") from None


_SHA256 = re.compile(r"[0-9a-f]{64}")


def verify_files(directory: Path, meta: dict[str, Any]) -> None:
    """Every file under ``directory`` is listed in ``files`` with its sha256, and every listed one is there."""
    files = meta["files"]
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{directory / META}: 'files' lists no checksums; an artifact lists every file it holds")
    if not isinstance(meta["model_file"], str) or meta["model_file"] not in files:
        raise ArtifactError(f"{directory / META}: model_file {meta['model_file']!r} is not listed in 'files'")
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            raise ArtifactError(f"{path}: a link; an artifact holds plain files only")
        name = path.relative_to(directory).as_posix()
        if path.is_file() and name != META and name not in files:
            raise ArtifactError(f"{path}: not listed in {META} (unlisted files are refused)")
    for name, expected in files.items():
        path = confined(directory, name, "file")
        if not isinstance(expected, str) or not _SHA256.fullmatch(expected):
            raise ArtifactError(f"{directory / META}: files[{name!r}] is not a sha256")
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (listed in {META})")
        if sha256(path) != expected:
            raise ArtifactError(f"{path}: corrupted (sha256 does not match {META})")


def artifact_config(directory: Path, meta: dict[str, Any]):
    """The RaylmConfig the builder needs, pointed at the files the artifact carries (and no others)."""
    from pydantic import ValidationError

    from raylm.config import RaylmConfig, format_validation_error
    from raylm.train.checkpoint import own_files_config

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


def refuse_external_data(model_file: Path) -> None:
    """ONNX tensors may name an external file to read their data from, anywhere on disk: raylm
    writes none, so a graph that has any is refused before ONNX Runtime follows the name."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    try:
        graph = onnx.load(str(model_file), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and onnx's own types
        raise ArtifactError(f"{model_file}: corrupted ({str(err)[:200]})") from None
    sparse = [t for sp in graph.graph.sparse_initializer for t in (sp.values, sp.indices)]
    if any(uses_external_data(tensor) for tensor in [*_get_all_tensors(graph), *sparse]):
        raise ArtifactError(f"{model_file}: names external tensor data; an artifact's graph must hold its own weights")


@dataclass
class Artifact:
    """A loaded artifact: ``predict(feeds) -> logits`` whichever file format it holds."""

    path: Path
    meta: dict[str, Any]
    model: Any = None  # torch.nn.Module for safetensors artifacts
    session: Any = None  # onnxruntime.InferenceSession for ONNX artifacts
    config: Any = None  # the RaylmConfig the builder was called with
    tflite: Any = None  # raylm.compress.tflite.TFLiteRunner for TFLite artifacts

    @property
    def runtime(self) -> str:
        return self.meta["runtime"]

    @property
    def labels(self) -> list[str]:
        return self.meta["labels"]

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.meta["inputs"])

    def predict(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.tflite is not None:  # Keras models take their one input positionally
            return self.tflite(feeds[self.inputs[0]])
        if self.session is not None:
            return self.session.run(["logits"], {name: feeds[name] for name in self.inputs})[0]
        import torch

        with torch.inference_mode():
            return self.model(*(torch.from_numpy(np.asarray(feeds[name])) for name in self.inputs)).float().numpy()


def load_artifact(path: str | os.PathLike[str], *, threads: int | None = None) -> Artifact:
    """Rebuild a ready model from an artifact directory (eval mode, CPU); no pickle involved.

    ``threads``: ONNX Runtime / LiteRT intra-op threads (default: the artifact's measured setting).
    """
    directory = Path(path)
    meta = read_meta(directory)
    verify_files(directory, meta)
    model_file = confined(directory, meta["model_file"], "model_file")
    config = artifact_config(directory, meta)
    threads = threads or _measured_threads(meta)
    if meta["runtime"] == "tflite":
        from raylm.compress.tflite import TFLiteRunner

        try:
            runner = TFLiteRunner(model_file, threads)
        except (ValueError, RuntimeError) as err:  # LiteRT's errors for a file that is not a model
            raise ArtifactError(f"{model_file}: corrupted, not a loadable TFLite model ({str(err)[:300]})") from None
        return Artifact(directory, meta, config=config, tflite=runner)
    if meta["runtime"] == "onnx":
        from raylm.compress.quantize import onnx_session

        refuse_external_data(model_file)
        try:
            session = onnx_session(model_file, threads)
        except Exception as err:  # ORT raises its own types for invalid graphs
            raise ArtifactError(f"{model_file}: corrupted ({str(err)[:300]})") from None
        return Artifact(directory, meta, session=session, config=config)
    from raylm.compress.architecture import ArchitectureError, load_resized
    from raylm.models import build_model

    try:
        model = build_model(config, len(meta["labels"]), load_pretrained=False)
    except (OSError, ValueError) as err:  # e.g. an hf_config/ that transformers refuses offline
        raise ArtifactError(f"{directory}: the model cannot be built from the artifact ({str(err)[:300]})") from None
    try:
        load_resized(model, model_file)
    except ArchitectureError as err:
        raise ArtifactError(str(err)) from None
    return Artifact(directory, meta, model=model.eval(), config=config)


def _measured_threads(meta: dict[str, Any]) -> int:
    report = meta.get("report") or {}
    threads = (report.get("compressed") or report).get("threads", 1)
    return threads if isinstance(threads, int) and threads >= 1 else 1
