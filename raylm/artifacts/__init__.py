"""The artifact format between compression and serving: files, metadata, verification, runtimes.

    artifact = load_artifact(path)                  # read_meta -> verify_files -> a Runtime
    logits = artifact.predict({"image": batch})     # inputs named as raylm.data.MODEL_INPUTS

Compression writes artifacts with ``write_meta`` (after putting the model file in place); serving,
evaluation and the report read them through this package and never import ``raylm.compress``.
"""

from raylm.artifacts.files import META, ArtifactError, checksums, confined, sha256, verify_files
from raylm.artifacts.format import (
    FORMAT,
    ONNX,
    SPARSE_WEIGHTS,
    TFLITE,
    WEIGHTS,
    ArtifactMeta,
    artifact_config,
    preprocessing_record,
    read_meta,
    write_meta,
)
from raylm.artifacts.load import Artifact, load_artifact
from raylm.artifacts.runtime import Runtime

__all__ = ["FORMAT", "META", "ONNX", "SPARSE_WEIGHTS", "TFLITE", "WEIGHTS", "Artifact", "ArtifactError",
           "ArtifactMeta", "Runtime", "artifact_config", "checksums", "confined", "load_artifact",
           "preprocessing_record", "read_meta", "sha256", "verify_files", "write_meta"]
