"""``load_artifact``: an artifact directory -> a ready ``Runtime`` (no pickle involved).

Order: ``artifact.json`` read and versioned, every file checked against its sha256, the model file
confined to the directory, then the runtime its ``runtime`` names is built from the files alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raylm.artifacts.files import ArtifactError, confined, verify_files
from raylm.artifacts.format import artifact_config, read_meta
from raylm.artifacts.runtime import Runtime, TorchRuntime


@dataclass
class Artifact:
    """A loaded artifact: ``predict(feeds) -> logits`` whichever file format it holds."""

    path: Path
    meta: dict[str, Any]
    runner: Runtime
    config: Any = None  # the RaylmConfig the builder was called with

    @property
    def runtime(self) -> str:
        return self.meta["runtime"]

    @property
    def labels(self) -> list[str]:
        return self.meta["labels"]

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.meta["inputs"])

    @property
    def weight_files(self) -> list[Path]:
        """The files the model's weights are in: what an artifact's size on disk counts."""
        sparse = self.meta.get("sparse_weights")
        return [self.path / self.meta["model_file"], *([self.path / sparse["file"]] if sparse else [])]

    @property
    def model(self) -> Any:  # torch.nn.Module of a safetensors artifact
        return getattr(self.runner, "model", None)

    @property
    def session(self) -> Any:  # onnxruntime.InferenceSession of an ONNX artifact
        return getattr(self.runner, "session", None)

    @property
    def tflite(self) -> Any:  # raylm.artifacts.tflite_runtime.TFLiteRunner of a TFLite artifact
        return getattr(self.runner, "runner", None)

    @property
    def rows_interact(self) -> bool:
        """Whether one row's answer depends on the other rows of its batch: dynamic int8 quantization
        (ONNX Runtime's DynamicQuantizeLinear) scales each activation tensor by its range over the whole
        batch, so a text's label changed with the texts beside it, other clients' ones included under
        Serve's batching (a new user's probe: 9 of 90 identical requests answered another label)."""
        return ((self.meta.get("recipe") or {}).get("quantize") or {}).get("mode") == "dynamic"

    def predict(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        rows = len(next(iter(feeds.values()))) if feeds else 0
        if rows <= 1 or not self.rows_interact:
            return self.runner.predict(feeds)
        # One row per call: every row answered as it would be alone (texts are padded to max_length, so a row's
        # own tensors do not change with its batch). On this CPU a batch of 16 gained only ~1.2x rows/s anyway.
        return np.concatenate([self.runner.predict({name: value[i:i + 1] for name, value in feeds.items()})
                               for i in range(rows)])


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
    inputs = tuple(meta["inputs"])
    if meta["runtime"] == "tflite":
        from raylm.artifacts.tflite_runtime import TFLiteRunner, TFLiteRuntime

        try:
            runner = TFLiteRunner(model_file, threads)
        except (ValueError, RuntimeError) as err:  # LiteRT's errors for a file that is not a model
            raise ArtifactError(f"{model_file}: corrupted, not a loadable TFLite model ({str(err)[:300]})") from None
        return Artifact(directory, meta, TFLiteRuntime(runner, inputs), config)
    if meta["runtime"] == "onnx":
        from raylm.artifacts.onnx_runtime import load_onnx

        return Artifact(directory, meta, load_onnx(directory, meta, model_file, threads), config)
    return Artifact(directory, meta, TorchRuntime(_torch_model(directory, meta, model_file, config), inputs), config)


def _torch_model(directory: Path, meta: dict[str, Any], model_file: Path, config: Any) -> Any:
    from raylm.artifacts.architecture import ArchitectureError, load_resized
    from raylm.models import build_model

    try:
        model = build_model(config, len(meta["labels"]), load_pretrained=False)
    except (OSError, ValueError) as err:  # e.g. an hf_config/ that transformers refuses offline
        raise ArtifactError(f"{directory}: the model cannot be built from the artifact ({str(err)[:300]})") from None
    try:
        load_resized(model, model_file)
    except ArchitectureError as err:
        raise ArtifactError(str(err)) from None
    return model.eval()


def _measured_threads(meta: dict[str, Any]) -> int:
    report = meta.get("report") or {}
    threads = (report.get("compressed") or report).get("threads", 1)
    return threads if isinstance(threads, int) and threads >= 1 else 1
