"""The README's Quick start end to end: ``python3 jobs/pipeline.py --config jobs/configs/image_tune.yaml``
as a user runs it (a subprocess on its own embedded Ray, serving until SIGTERM), on the shipped YAML with
only dotted overrides that make it small; the served model judged over HTTP on the validation files.

Re-entry is covered elsewhere (#27, budget): re-entering at a stage and keeping the earlier stages'
records and files by ``tests/integration/test_faults.py::test_a_pipeline_sigkilled_in_a_stage_reenters_there_on_the_same_command``
(default: evaluate; ``-m faults``: train, compress); the accuracy guard refusing a compressed attempt
and naming the budget by ``tests/unit/test_records.py::test_the_compress_stage_judges_an_attempt_by_its_objectives``;
the fall-back to the next candidate by ``tests/unit/test_pipeline_attempts.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from raylm.config import ConfigError, load_config
from tests.helpers.faults import wait_for
from tests.helpers.paths import CONFIGS, REPO
from tests.helpers.ports import free_port as _free_port
from tests.helpers.served import assert_served_beats_chance, validation_files

pytestmark = pytest.mark.integration

QUICK_START = CONFIGS / "image_tune.yaml"


def _quick_start_overrides(root: Path, port: int) -> list[str]:
    """The Quick start config, small: 40 digits a class (~80 validation images), two one-epoch trials
    over the YAML's own search space, a three-epoch retrain; its own storage, cache and port."""
    return [f"data.cache_dir={root / 'cache'}", "data.samples_per_class=40", f"train.storage_path={root / 'runs'}",
            "train.name=quickstart", "train.epochs=1", "train.batch_size=16", "tune.num_samples=2",
            "compress.finetune_epochs=1", "compress.latency_runs=3", "compress.latency_warmup=1",
            "pipeline.retrain_epochs=3", f"serve.port={port}", "serve.max_replicas=1", "serve.replica_cpus=0.25",
            "pipeline.keep_serving=true"]


def _lines_of(stream, lines: list[str]) -> threading.Thread:
    def read() -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def _walk(config: dict, dotted: str):
    node = config
    for key in dotted.split("."):
        node = node[key]
    return node


def test_quick_start_end_to_end(tmp_path):
    port = _free_port()
    overrides = _quick_start_overrides(tmp_path, port)
    cfg = load_config(QUICK_START, overrides)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no cluster to join: an embedded Ray
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # this checkout's raylm
    proc = subprocess.Popen([sys.executable, "jobs/pipeline.py", "--config", str(QUICK_START), *overrides], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = _lines_of(proc.stdout, lines)
    try:
        wait_for(lambda: any(line.startswith("serving until SIGTERM") for line in lines) or proc.poll() is not None,
                 900, "the Quick start to serve")
        assert proc.poll() is None, "\n".join(lines[-60:])
        stages = json.loads((cfg.run_dir / "pipeline.json").read_text())["stages"]
        assert list(stages) == ["tune", "train", "compress", "evaluate", "serve"]
        url = stages["serve"]["url"]
        assert url == f"http://127.0.0.1:{port}/predict" and any(url in line for line in lines)
        # The served model over real HTTP, on the files the run held out, against their folders' labels.
        digits = Path(cfg.data.cache_dir).expanduser() / "demo" / "digits-40"  # raylm/data/demo.py
        held_out = validation_files(digits, cfg.data.validation_fraction)
        assert len(held_out) == stages["evaluate"]["samples"]
        assert_served_beats_chance(url, held_out)
        smoke = stages["serve"]["smoke"]
        assert smoke["status"] == 200 and smoke["predicted"] == smoke["expected"], smoke
        proc.send_signal(signal.SIGTERM)  # the README's Ctrl-C: drain, remove the app, stop the embedded Ray
        assert proc.wait(timeout=120) == 0, "\n".join(lines[-60:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        reader.join(timeout=10)
    # Both trials ran; ASHA (the Quick start's scheduler) may stop one at its single rung, so >= 1 completed.
    assert stages["tune"]["trials"] == 2 and stages["tune"]["completed"] >= 1
    assert stages["tune"]["chosen"] in stages["tune"]["pareto_front"]
    assert stages["train"]["metrics"]["epoch"] == 3 == cfg.pipeline.retrain_epochs
    # The report the run wrote, at the path it printed, about this run's served model.
    (report_line,) = [line for line in lines if line.startswith("report ")]
    report = Path(report_line.split(None, 1)[1])
    assert report == cfg.run_dir / "report.html" and stages["compress"]["recipe"] in report.read_text()
    # The sweep's point was retrained with its own hyperparameters: Tune's params.json of the chosen trial
    # against the resolved config in the retrained checkpoint's raylm.json (train.* and augment.*; the
    # compress.* ones apply to the compress stage). The YAML's own train.lr (0.003) is not one a trial
    # draws exactly, so a retrain that ignored the chosen point shows.
    chosen_id = stages["tune"]["chosen"].removesuffix("-dense")
    (trial_dir,) = [d for d in Path(stages["tune"]["tune_dir"]).iterdir() if d.is_dir() and chosen_id in d.name]
    tuned = {k: v for k, v in json.loads((trial_dir / "params.json").read_text()).items()
             if k.startswith(("train.", "augment."))}
    retrained = json.loads((Path(stages["train"]["checkpoint"]) / "raylm.json").read_text())["config"]
    assert "train.lr" in tuned and {k: _walk(retrained, k) for k in tuned} == tuned, (tuned, retrained["train"])
    assert tuned["train.lr"] != 0.003 and retrained["train"]["epochs"] == cfg.pipeline.retrain_epochs
    assert stages["compress"]["artifact"].startswith(str(cfg.run_dir / "compress"))
    compressed = stages["compress"]
    assert compressed["dense"]["runtime"] == "onnx-fp32" and compressed["attempts"][-1]["passed"]
    assert stages["evaluate"]["accuracy_drop_pts"] <= cfg.pipeline.max_accuracy_drop


def test_reentry_needs_the_earlier_stages(ray_local, tiny_config):
    from raylm.pipeline import run_pipeline

    cfg = tiny_config("image", "train.name=never-ran", "tune.space={train.lr: {choice: [0.01]}}")
    with pytest.raises(ConfigError, match="has no 'tune' stage"):
        run_pipeline(cfg, start="compress", verbose=False)
    with pytest.raises(ConfigError, match="stages run in the order"):
        run_pipeline(cfg, start="serve", stop="train", verbose=False)
