"""``tracking``: where a run's params, per-epoch metrics, files and served model are recorded
outside raylm's own run directory. Only MLflow today; off unless ``tracking.mlflow.uri`` is set.

Checked here, before Ray starts: the URI's scheme, and that the MLflow client is installed
(looked up, not imported: validating a config loads no framework)."""

from __future__ import annotations

import importlib.util
import re

from pydantic import field_validator, model_validator

from raylm.config.section import Section

# What MlflowClient can talk to: a tracking server, Databricks, or a store it opens itself.
MLFLOW_SCHEMES = ("http", "https", "databricks", "file", "sqlite", "postgresql", "mysql", "mssql")
# Registered model names: MLflow allows more, but a models:/ URI and a Serve app name must stay plain.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class MlflowConfig(Section):
    # The tracking URI (e.g. http://mlflow.internal:5000). None: no MLflow. On a cluster it must be
    # reachable from every node: the worker ranked 0 logs each epoch's metrics itself.
    uri: str | None = None
    experiment: str = "raylm"
    # Nest this run's MLflow run under another (a sweep sets it for its trials; a CI job may set its own).
    parent_run_id: str | None = None
    # The pipeline registers its served artifact under this name; None: "<task.modality>-<model.name>".
    model_name: str | None = None
    register_model: bool = True  # false: track the run, register nothing

    @field_validator("uri")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split(":", 1)[0].split("+", 1)[0].lower() if ":" in value else ""
        if scheme not in MLFLOW_SCHEMES:
            raise ValueError(f"must be a URI with one of the schemes {', '.join(MLFLOW_SCHEMES)} "
                             "(e.g. http://127.0.0.1:5000)")
        if scheme in ("http", "https"):
            from urllib.parse import urlsplit

            parts = urlsplit(value)
            try:
                parts.port  # noqa: B018 - read for its check: a port that is not a number raises here
            except ValueError as err:
                raise ValueError(f"{value!r}: {err}") from None
            if not parts.hostname:
                raise ValueError(f"{value!r} names no host (e.g. http://127.0.0.1:5000)")
        return value.rstrip("/")

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value is not None and not _MODEL_NAME.fullmatch(value):
            raise ValueError("must be letters, digits, '.', '_' and '-' (it becomes models:/<name>/<version>)")
        return value

    @model_validator(mode="after")
    def _client_installed(self) -> MlflowConfig:
        if self.uri is not None and importlib.util.find_spec("mlflow") is None:
            raise ValueError("tracking.mlflow.uri: the MLflow client is not installed (pip install 'raylm[mlflow]' "
                             "or mlflow-skinny)")
        return self


class TrackingConfig(Section):
    mlflow: MlflowConfig = MlflowConfig()
