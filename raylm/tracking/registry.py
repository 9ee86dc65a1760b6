"""The model registry: the pipeline's served artifact as a model version with its certificate as
tags, and a registered version back as a local artifact directory that ``raylm serve`` serves
(checked and verified like any artifact: ``artifact.json``, then every file's sha256 on load)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylm.errors import RaylmError
from raylm.tracking.runs import TrackedRun, client

if TYPE_CHECKING:
    from raylm.config import RaylmConfig

CERTIFICATE = "certificate.json"
MODEL_DIR = "model"  # where the served artifact's files sit in the MLflow run
_MODELS_URI = re.compile(r"models:/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_-]+))")
log = logging.getLogger(__name__)


class RegistryError(RaylmError):
    """A models:/ URI that does not name a registered version, or a server that cannot be reached."""


def model_name(cfg: RaylmConfig) -> str:
    return cfg.tracking.mlflow.model_name or f"{cfg.task.modality}-{cfg.model.name}"


def certificate(stages: dict[str, Any], artifact_meta: dict[str, Any]) -> dict[str, str]:
    """What the served artifact proves, as flat string tags: its accuracy on the whole validation
    split (reloaded from the file), size on disk, p50 at the serving batch size, the drop vs the
    dense model of the same training (and that model's figures), the recipe, and its lineage."""
    compress, evaluate = stages["compress"], stages["evaluate"]
    dense = compress.get("dense") or {}
    lineage = artifact_meta.get("lineage") or {}
    model_file = artifact_meta.get("model_file")
    ratios = (artifact_meta.get("report") or {}).get("ratios") or {}
    values = {
        "accuracy": evaluate["accuracy"], "validation_samples": evaluate["samples"],
        "size_mb": evaluate["size_mb"], "p50_ms": compress["latency_ms"],
        "serving_batch_size": (artifact_meta.get("recipe") or {}).get("serving_batch_size"),
        "accuracy_drop_pts": evaluate["accuracy_drop_pts"],
        "dense_accuracy": dense.get("accuracy"), "dense_size_mb": dense.get("size_mb"),
        "dense_p50_ms": dense.get("latency_ms"), "dense_runtime": dense.get("runtime"),
        # The gate's ratio (paired: both models timed in alternation), not the two p50s' quotient.
        "latency_ratio": ratios.get("latency_ratio"), "latency_ratio_timing": ratios.get("latency_ratio_timing"),
        "recipe": compress["recipe"], "runtime": artifact_meta.get("runtime"),
        "data_fingerprint": lineage.get("data_fingerprint"), "config_hash": lineage.get("config_hash"),
        "model_file": model_file, "model_sha256": (artifact_meta.get("files") or {}).get(model_file),
    }
    return {f"raylm.{key}": str(value) for key, value in values.items() if value is not None}


def register_served(run: TrackedRun, cfg: RaylmConfig, artifact_dir: Path, tags: dict[str, str]) -> str:
    """Log ``artifact_dir``'s files under ``model/`` of ``run`` and register them as a new version of
    ``model_name(cfg)`` tagged with ``tags``; ``models:/<name>/<version>``. The same file in the same
    run (a rerun of the evaluate stage) is its existing version, not a new one."""
    from mlflow.exceptions import MlflowException

    mlflow_client, name = client(run.uri), model_name(cfg)
    try:
        mlflow_client.create_registered_model(name, tags={"raylm.task": cfg.task.modality})
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    for version in mlflow_client.search_model_versions(f"name = '{name}' and run_id = '{run.run_id}'"):
        if version.tags.get("raylm.model_sha256") == tags.get("raylm.model_sha256"):
            return f"models:/{name}/{version.version}"
    mlflow_client.log_artifacts(run.run_id, str(artifact_dir), MODEL_DIR)
    source = f"{mlflow_client.get_run(run.run_id).info.artifact_uri}/{MODEL_DIR}"
    version = mlflow_client.create_model_version(name, source=source, run_id=run.run_id, tags=tags,
                                                 description=f"raylm pipeline {cfg.run_location.uri}")
    return f"models:/{name}/{version.version}"


def write_certificate(run_dir: Path, tags: dict[str, str], registered: str | None) -> Path:
    from raylm.atomic import atomic_write_text

    path = run_dir / CERTIFICATE
    atomic_write_text(path, json.dumps({"registered": registered, "tags": tags}, indent=2))
    return path


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name/3`` -> (name, "3", None); ``models:/name@champion`` -> (name, None, "champion")."""
    found = _MODELS_URI.fullmatch(uri)
    if not found:
        raise RegistryError(f"--model: {uri!r} is not models:/<name>/<version> or models:/<name>@<alias>")
    return found["name"], found["version"], found["alias"]


def download_version(uri: str, tracking_uri: str, cache: Path) -> Path:
    """The files of the registered version ``uri`` in ``<cache>/mlflow/<name>/<version>`` (downloaded
    once, atomically); the directory. Not checked here: the caller serves it as any artifact."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from raylm.atomic import atomic_directory

    name, version, alias = parse_models_uri(uri)
    mlflow_client = client(tracking_uri)
    try:
        found = (mlflow_client.get_model_version(name, version) if version is not None
                 else mlflow_client.get_model_version_by_alias(name, alias))
    except MlflowException as err:
        raise RegistryError(f"--model: {uri} on {tracking_uri}: {err.message}") from None
    final = cache / "mlflow" / name / str(found.version)
    if not (final / "artifact.json").is_file():
        with atomic_directory(final) as tmp:
            got = Path(mlflow.artifacts.download_artifacts(artifact_uri=found.source, dst_path=str(tmp),
                                                           tracking_uri=tracking_uri))
            if got != tmp:  # the source directory's own name under tmp: its files go to the top
                for item in list(got.iterdir()):
                    item.rename(tmp / item.name)
                got.rmdir()
    log.info("mlflow: %s (version %s, %s) in %s", uri, found.version, found.source, final)
    return final


def track_stage(cfg: RaylmConfig, run: TrackedRun | None, stage: str, stages: dict[str, Any], run_dir: Path) -> None:
    """The pipeline's hook after each stage (no-op when tracking is off): the stage's plain numbers into
    its MLflow run; after ``evaluate``, the served artifact registered as a model version with its
    certificate as tags, and the certificate (``<run>/certificate.json``) and ``artifact.json`` as files."""
    if run is None:
        return
    from raylm.storage import localize
    from raylm.tracking.runs import log_files, log_metrics

    log_metrics(run, {f"{stage}.{key}": value for key, value in stages[stage].items()})
    if stage != "evaluate":
        return
    artifact_dir = localize(stages["compress"]["artifact"], cfg.train.storage_options)
    tags = certificate(stages, json.loads((artifact_dir / "artifact.json").read_text()))
    registered = register_served(run, cfg, artifact_dir, tags) if cfg.tracking.mlflow.register_model else None
    log_files(run, [write_certificate(run_dir, tags, registered), artifact_dir / "artifact.json"], "certificate")
