"""Running raylm's CLI as a user does: a subprocess driver on the test session's Ray."""

from __future__ import annotations

import os
import re

from tests.helpers.paths import REPO

# What Ray, Ray Data, Train, Tune and Serve print on their own: forwarded worker lines
# "(RayTrainWorker pid=...)", logger lines "INFO worker.py:1234 --", Tune's status boxes,
# Ray Data's plans, Serve's controller.
RAY_LINE = re.compile(r"\(\w+ pid=\d+|\b(INFO|WARNING|ERROR) \w+\.py:\d+|Trial status|TrainingReport|"
                      r"Running Dataset|ServeController|ProxyActor|Started a local Ray instance|╭|│")


def _env() -> dict[str, str]:
    """A driver on the test session's Ray, as under ``ray job submit`` (and no second Ray to start)."""
    import ray

    return dict(os.environ, PYTHONPATH=str(REPO), RAY_ADDRESS=ray.get_runtime_context().gcs_address)
