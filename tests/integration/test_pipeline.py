"""The README's Quick start end to end: ``python3 jobs/pipeline.py --config jobs/configs/image_tune.yaml``
as a user runs it (a subprocess on its own embedded Ray, serving until SIGTERM), on the shipped YAML with
only dotted overrides that make it small; the served model judged over HTTP on the validation files.
The run is the session's one whole pipeline (tests/helpers/tracked_pipeline.py), which the console,
report and MLflow tests read too (#27 budget: one run where there were two).

Re-entry is covered elsewhere (#27, budget): re-entering at a stage and keeping the earlier stages'
records and files by ``tests/integration/test_faults.py::test_a_pipeline_sigkilled_in_a_stage_reenters_there_on_the_same_command``
(default: evaluate; ``-m faults``: train, compress); the accuracy guard refusing a compressed attempt
and naming the budget by ``tests/unit/test_records.py::test_the_compress_stage_judges_an_attempt_by_its_objectives``;
the fall-back to the next candidate by ``tests/unit/test_pipeline_attempts.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raylm.config import ConfigError
from tests.helpers.served import chance_bar_of

pytestmark = pytest.mark.integration


def _walk(config: dict, dotted: str):
    node = config
    for key in dotted.split("."):
        node = node[key]
    return node


def test_quick_start_end_to_end(tracked_pipeline):
    """The session's Quick start run (tests/helpers/tracked_pipeline.py; MLflow tracking is on there too,
    judged by test_mlflow.py): it served, answered the held-out files over HTTP, and exited 0 on SIGTERM."""
    run = tracked_pipeline
    cfg, lines = run.cfg, run.console.splitlines()
    assert run.served, "\n".join(lines[-60:])
    stages = json.loads((cfg.run_dir / "pipeline.json").read_text())["stages"]
    assert list(stages) == ["tune", "train", "compress", "evaluate", "serve"]
    url = stages["serve"]["url"]
    assert url == f"http://127.0.0.1:{run.port}/predict" and any(url in line for line in lines)
    # The served model over real HTTP (while it served), on the files the run held out, against their folders' labels.
    assert len(run.held_out) == stages["evaluate"]["samples"] >= 60
    assert run.answers is not None, run.answer_error
    labels = [label for _, label in run.held_out]
    accuracy = sum(p == t for p, t in zip(run.answers, labels)) / len(labels)
    assert accuracy >= chance_bar_of(labels), (accuracy, chance_bar_of(labels))
    smoke = stages["serve"]["smoke"]
    assert smoke["status"] == 200 and smoke["predicted"] == smoke["expected"], smoke
    assert run.done.returncode == 0, "\n".join(lines[-60:])  # SIGTERM: drained, app removed, embedded Ray stopped
    # Both trials ran; ASHA (the Quick start's scheduler) may stop one at its first rung, so >= 1 completed.
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


def test_a_mistyped_reentry_neither_creates_a_run_nor_marks_a_finished_one_failed(tmp_path, capsys):
    """The stage checks run before the run's directory and status exist (a new user's `--from serve --to compress`
    turned a finished run's state into failed in `raylm runs`; `--from compress` of a run that never ran left
    a directory that `raylm runs` listed as a failed pipeline)."""
    from raylm.cli import main
    from raylm.report.runs import run_state, run_status

    common = ["pipeline", "--config", "jobs/configs/image_tune.yaml", f"train.storage_path={tmp_path}",
              f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(common + ["train.name=never", "--from", "compress"]) == 2
    assert "has no 'tune' stage" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()

    with run_status(tmp_path / "done", "pipeline"):
        pass
    assert run_state(tmp_path / "done") == "finished"
    assert main(common + ["train.name=done", "--from", "serve", "--to", "compress"]) == 2
    assert "stages run in the order" in capsys.readouterr().err
    assert run_state(tmp_path / "done") == "finished"


def test_a_rerun_with_changed_sweep_settings_is_refused_not_silently_resumed(tmp_path):
    """A rerun continues the run's interrupted sweep from its saved config: `tune.num_samples=3` after an
    interrupted `=6` ran 6 trials without a word. Refused before Ray, naming the key; the same command, or a
    change the sweep does not read (serve.*), continues."""
    import json

    from raylm.config import load_config
    from raylm.pipeline import check_entry
    from raylm.tune.sweep import SWEEP_CONFIG

    def cfg(*overrides):
        return load_config("jobs/configs/image_tune.yaml",
                           [f"train.storage_path={tmp_path}", "train.name=r", "tune.num_samples=6", *overrides])

    (tmp_path / "r" / "tune").mkdir(parents=True)
    (tmp_path / "r" / "tune" / SWEEP_CONFIG).write_text(json.dumps(cfg().to_dict()))
    assert check_entry(cfg(), "tune", "tune") == "tune"
    assert check_entry(cfg("serve.port=8123"), "tune", "tune") == "tune"
    with pytest.raises(ConfigError, match=r"^tune: this run's sweep .* another config \(tune.num_samples: 6 -> 3\); "
                                          r"rerun the same command .* another train.name"):
        check_entry(cfg("tune.num_samples=3"), "tune", "tune")
