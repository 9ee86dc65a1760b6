"""A real MLflow tracking server for tests: ``mlflow server`` (sqlite backend store, a local artifact
destination, both in its own temp directory) on a free port, in its own process group.

The server needs the full ``mlflow`` package, whose pyarrow pin clashes with Ray's, so setup.sh puts
it in its own virtualenv (``.venv-mlflow/``); ``RAYLM_MLFLOW_SERVER`` names another executable.
raylm itself only needs the client (``mlflow-skinny``) in the main environment.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def server_executable() -> Path:
    """The ``mlflow`` that can run a server; RuntimeError saying how to get one."""
    named = os.environ.get("RAYLM_MLFLOW_SERVER")
    candidate = Path(named) if named else REPO / ".venv-mlflow" / "bin" / "mlflow"
    if not candidate.is_file():
        raise RuntimeError(f"no MLflow server executable at {candidate}: run `bash setup.sh` (it creates .venv-mlflow/ "
                           "with the full mlflow package) or set RAYLM_MLFLOW_SERVER to an `mlflow` executable")
    return candidate


@dataclass
class MlflowServer:
    uri: str = ""
    process: subprocess.Popen | None = None
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="raylm-mlflow-server-")))

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def start(self, deadline_s: float = 300.0) -> MlflowServer:
        command = [str(server_executable()), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                   "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", "0",
                   "--workers", "1"]
        with open(self.log, "wb") as out:
            # No background job runner (its queue consumers serve MLflow's GenAI jobs, which raylm never submits).
            env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                            cwd=self.root, env=env)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", self.log.read_text(errors="replace"))
            if found and self._answers(found.group(1)):
                self.uri = found.group(1)
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.3)
        tail = self.log.read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"mlflow server did not start within {deadline_s}s: {tail}")

    @staticmethod
    def _answers(uri: str) -> bool:
        import requests

        try:
            return requests.get(f"{uri}/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own group: the server and its uvicorn workers
            try:
                # 2 s: its uvicorn worker ends within ~0.5 s of SIGTERM, but the `mlflow server` parent then
                # lingered ~6 s more, the session's teardown waiting on it; the server and its store are
                # thrown away, so SIGKILL then (#27 budget).
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        shutil.rmtree(self.root, ignore_errors=True)
