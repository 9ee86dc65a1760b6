"""The README's Quick start, run once for the session and read by every test that needs a whole pipeline.

``python3 jobs/pipeline.py --config jobs/configs/image_tune.yaml`` as a user runs it: a subprocess on
its own embedded Ray, its output piped (as under ``ray job submit``), serving until SIGTERM, on the
shipped YAML with only dotted overrides that make it small, and MLflow tracking into a real server.
While it serves, the held-out digits are posted to it over real HTTP and the answers kept; then it gets
SIGTERM (the README's Ctrl-C) and must drain and exit 0.

Its readers: the Quick start case (``integration/test_pipeline.py``), the console, report and ``raylm
runs`` tests (``integration/test_console.py``) and the MLflow test (``integration/test_mlflow.py``). One
run instead of two: the Quick start and a separate tracked tiny pipeline each took ~50 s of the
default suite (#27 budget).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.configs import shared_cache_dir
from tests.helpers.paths import CONFIGS, REPO
from tests.helpers.ports import free_port

QUICK_START = CONFIGS / "image_tune.yaml"
NAME = "quickstart"
TRIALS = 2  # over the YAML's own search space (Optuna + ASHA); MLflow gets one child each
TRIAL_EPOCHS = 2  # a child's metric history has two steps (one if ASHA stops it at its first rung)
RETRAIN_EPOCHS = 3


def quick_start_overrides(root: Path, port: int) -> list[str]:
    """The Quick start config, small: 40 digits a class (~80 validation images), two two-epoch trials
    over the YAML's own search space, a three-epoch retrain; its own storage, cache and port."""
    return [f"data.cache_dir={root / 'cache'}", "data.samples_per_class=40", f"train.storage_path={root / 'runs'}",
            f"train.name={NAME}", f"train.epochs={TRIAL_EPOCHS}", "train.batch_size=16", f"tune.num_samples={TRIALS}",
            "compress.finetune_epochs=1", "compress.latency_runs=3", "compress.latency_warmup=1",
            f"pipeline.retrain_epochs={RETRAIN_EPOCHS}", f"serve.port={port}", "serve.max_replicas=1",
            "serve.replica_cpus=0.25", "pipeline.keep_serving=true"]


def tiny_cli_overrides(root: Path, data_root: dict[str, Path], name: str) -> list[str]:
    """The tiny image config as ``raylm`` overrides, run ``name`` under ``root/runs`` (beside the Quick start's run)."""
    return ["task.modality=image", "model.name=seed_cnn", f"data.path={data_root['image']}",
            "data.validation_fraction=0.3", f"data.cache_dir={shared_cache_dir(data_root, 'image')}", f"train.storage_path={root / 'runs'}",
            "train.batch_size=8", "train.cpus_per_worker=0.5", "train.lr=0.005", f"train.name={name}"]


@dataclass
class TrackedPipeline:
    root: Path  # <root>/runs/<NAME> is the run; other tests may add their own runs beside it
    cfg: object  # the resolved Quick start config (raylm.config), as the run loaded it
    port: int
    done: subprocess.CompletedProcess  # exit status after SIGTERM, the whole console in stdout
    tracking_uri: str
    experiment: str
    model_name: str
    served: bool = False  # it printed "serving until SIGTERM" and was still running
    held_out: list[tuple[Path, str]] = field(default_factory=list)  # (file, label) of the validation split
    answers: list[str] | None = None  # the label served for each held-out file, over HTTP while it served
    answer_error: str = ""  # why no answers, when the requests failed

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / NAME

    @property
    def console(self) -> str:
        return self.done.stdout + self.done.stderr


def _wait_for(predicate, deadline_s: float) -> None:
    import time

    deadline = time.monotonic() + deadline_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.2)


def run_tracked_pipeline(root: Path, tracking_uri: str, timeout_s: float = 900) -> TrackedPipeline:
    """The Quick start with tracking on, answered over HTTP while serving, then SIGTERMed."""
    import json

    from raylm.config import load_config
    from tests.helpers.served import served_labels, validation_files

    port = free_port()
    experiment, model_name = f"test-{uuid.uuid4().hex[:10]}", f"pipe-{uuid.uuid4().hex[:8]}"
    overrides = quick_start_overrides(root, port) + [
        f"tracking.mlflow.uri={tracking_uri}", f"tracking.mlflow.experiment={experiment}",
        f"tracking.mlflow.model_name={model_name}"]
    cfg = load_config(QUICK_START, overrides)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no cluster to join: an embedded Ray
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # this checkout's raylm
    args = [sys.executable, "jobs/pipeline.py", "--config", str(QUICK_START), *overrides]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    run = TrackedPipeline(root, cfg, port, subprocess.CompletedProcess(args, -1, "", ""), tracking_uri, experiment,
                          model_name)
    try:
        _wait_for(lambda: any(line.startswith("serving until SIGTERM") for line in lines) or proc.poll() is not None,
                  timeout_s)
        run.served = proc.poll() is None and any(line.startswith("serving until SIGTERM") for line in lines)
        if run.served:
            digits = Path(cfg.data.cache_dir).expanduser() / "demo" / "digits-40"  # raylm/data/demo.py
            run.held_out = validation_files(digits, cfg.data.validation_fraction)
            try:
                url = json.loads((run.run_dir / "pipeline.json").read_text())["stages"]["serve"]["url"]
                run.answers = served_labels(url, run.held_out)
            except Exception as err:  # noqa: BLE001 - judged by the Quick start case, which names it
                run.answer_error = f"{type(err).__name__}: {err}"
            proc.send_signal(signal.SIGTERM)  # the README's Ctrl-C: drain, remove the app, stop the embedded Ray
        rc = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        reader.join(timeout=10)
    run.done = subprocess.CompletedProcess(args, rc, "".join(f"{line}\n" for line in lines), "")
    return run
