"""ARTIFACT directories: the only thing serving loads.

Layout::

    artifact.json       format, task, labels, inputs, preprocessing, architecture (builder + shapes
                        after pruning), compression recipe, lineage, measured report, file checksums
    model.safetensors   float weights (rebuilt with the registry builder, resized to the shapes)
      or model.onnx     an ONNX graph (int8 when quantized), run with ONNX Runtime
    tokenizer/          text: the tokenizer the data was encoded with
    hf_config/          text: the HF architecture config the builder starts from

Written into a hidden temporary sibling and renamed into place when whole; loaded from json,
safetensors and ONNX only (no pickle); every file is checked against its recorded sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "raylm.artifact/1"
META = "artifact.json"
WEIGHTS = "model.safetensors"
ONNX = "model.onnx"


class ArtifactError(ValueError):
    """An artifact that cannot be loaded; the message names the file and what is wrong."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): sha256(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != META}


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    meta = dict(meta, format=FORMAT, files=checksums(directory))
    (directory / META).write_text(json.dumps(meta, indent=2))


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / META
    if not path.is_file():
        raise ArtifactError(f"{directory}: not a raylm artifact (no {META})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: corrupted ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ArtifactError(f"{path}: format {found!r}, expected {FORMAT!r}")
    for key in ("task", "labels", "inputs", "architecture", "model_file", "files"):
        if key not in meta:
            raise ArtifactError(f"{path}: corrupted (no '{key}')")
    return meta


def verify_files(directory: Path, meta: dict[str, Any]) -> None:
    for name, expected in meta["files"].items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (listed in {META})")
        if sha256(path) != expected:
            raise ArtifactError(f"{path}: corrupted (sha256 does not match {META})")


def artifact_config(directory: Path, meta: dict[str, Any]):
    """The RaylmConfig the builder needs, pointed at the files the artifact carries."""
    from raylm.config import RaylmConfig

    tree = json.loads(json.dumps(meta["architecture"]["config"]))
    tree["task"]["labels"] = meta["labels"]
    tree["data"].update(path=None, validation_path=None)
    tree["train"]["resume_from"] = None
    if (directory / "hf_config").is_dir():
        tree["model"]["pretrained"] = str(directory / "hf_config")
    if (directory / "tokenizer").is_dir():
        tree["data"]["text"]["tokenizer"] = str(directory / "tokenizer")
    return RaylmConfig.model_validate(tree)


@dataclass
class Artifact:
    """A loaded artifact: ``predict(feeds) -> logits`` whichever file format it holds."""

    path: Path
    meta: dict[str, Any]
    model: Any = None  # torch.nn.Module for safetensors artifacts
    session: Any = None  # onnxruntime.InferenceSession for ONNX artifacts
    config: Any = None  # the RaylmConfig the builder was called with

    @property
    def labels(self) -> list[str]:
        return self.meta["labels"]

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.meta["inputs"])

    def predict(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.session is not None:
            return self.session.run(["logits"], {name: feeds[name] for name in self.inputs})[0]
        import torch

        with torch.inference_mode():
            return self.model(*(torch.from_numpy(np.asarray(feeds[name])) for name in self.inputs)).float().numpy()


def load_artifact(path: str | os.PathLike[str], *, threads: int | None = None, verify: bool = True) -> Artifact:
    """Rebuild a ready model from an artifact directory (eval mode, CPU); no pickle involved.

    ``threads``: ONNX Runtime intra-op threads (default: the artifact's measured setting).
    """
    directory = Path(path)
    meta = read_meta(directory)
    if verify:
        verify_files(directory, meta)
    model_file = directory / meta["model_file"]
    config = artifact_config(directory, meta)
    if model_file.suffix == ".onnx":
        from raylm.compress.quantize import onnx_session

        try:
            session = onnx_session(model_file, threads or meta.get("report", {}).get("threads", 1))
        except Exception as err:  # ORT raises its own types for invalid graphs
            raise ArtifactError(f"{model_file}: corrupted ({str(err)[:300]})") from None
        return Artifact(directory, meta, session=session, config=config)
    from raylm.compress.architecture import ArchitectureError, load_resized
    from raylm.models import build_model

    model = build_model(config, len(meta["labels"]), load_pretrained=False)
    try:
        load_resized(model, model_file)
    except ArchitectureError as err:
        raise ArtifactError(str(err)) from None
    return Artifact(directory, meta, model=model.eval(), config=config)
