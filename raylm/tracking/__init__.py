"""Experiment tracking and the model registry (MLflow), in one place: the stages call these
functions and stay free of MLflow code. Everything is a no-op while ``tracking.mlflow.uri`` is
unset; nothing imports MLflow until then. See docs/mlflow.md."""

from raylm.tracking.registry import (CERTIFICATE, RegistryError, certificate, download_version, model_name,
                                     parse_models_uri, register_served, track_stage, write_certificate)
from raylm.tracking.runs import (RUN_FILE, TrackedRun, epoch_hook, flat_params, log_epoch, log_files, log_metrics, nested_under,
                                 run_of, tracked_run)

__all__ = ["CERTIFICATE", "RUN_FILE", "RegistryError", "TrackedRun", "certificate", "download_version", "epoch_hook", "nested_under",
           "flat_params", "log_epoch", "log_files", "log_metrics", "model_name", "parse_models_uri",
           "register_served", "run_of", "track_stage", "tracked_run", "write_certificate"]
