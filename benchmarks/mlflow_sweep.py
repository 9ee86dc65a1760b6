"""The goal scenario of issue 30 at full size: the main job's 12-trial sweep (``jobs/configs/image_tune.yaml``,
Optuna + ASHA) tracked into a real ``mlflow server`` (started here, from ``.venv-mlflow/``, on a free port,
in its own temp directory), then read back with ``MlflowClient``: parent runs, child runs, each child's
per-epoch steps and status. Prints ONE JSON line with the load average.

    python benchmarks/mlflow_sweep.py [extra key=value overrides, e.g. tune.num_samples=4]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main(extra: list[str]) -> dict:
    from mlflow import MlflowClient

    from helpers.mlflow_server import MlflowServer

    server = MlflowServer().start()
    runs_root = tempfile.mkdtemp(prefix="raylm-mlflow-sweep-")
    try:
        started = time.perf_counter()
        command = [sys.executable, "-m", "raylm.cli", "tune", "--config", "jobs/configs/image_tune.yaml",
                   f"train.storage_path={runs_root}", "train.name=mlflow-sweep", f"tracking.mlflow.uri={server.uri}",
                   "tracking.mlflow.experiment=goal-sweep", "tune.export=none", *extra]
        done = subprocess.run(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
        seconds = time.perf_counter() - started
        client = MlflowClient(server.uri)
        experiment = client.get_experiment_by_name("goal-sweep")
        runs = client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        steps = {r.info.run_name: sorted(m.step for m in client.get_metric_history(r.info.run_id, "val_accuracy"))
                 for r in children}
        return {"benchmark": "mlflow_sweep", "rc": done.returncode, "seconds": round(seconds, 1),
                "parents": len(parents), "children": len(children),
                "children_of_the_parent": sum(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
                if parents else 0,
                "child_status": {s: sum(r.info.status == s for r in children) for s in ("FINISHED", "KILLED", "FAILED", "RUNNING")},
                "epoch_steps_per_child": steps, "loadavg": os.getloadavg(),
                "stderr_tail": done.stderr[-600:] if done.returncode else ""}
    finally:
        server.stop()


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip())
        sys.exit(0)
    print(json.dumps(main(sys.argv[1:])))
