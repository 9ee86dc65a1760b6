"""``raylm report`` of a run whose command did not finish says so: failed with its error, or interrupted
(a failed run's page used to say only "This run has nothing to report yet")."""

from __future__ import annotations

import json


def _run(tmp_path, status: dict):
    run_dir = tmp_path / "doc-4w"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "logs" / "status.json").write_text(json.dumps(status))
    return run_dir


def test_a_failed_runs_report_names_its_error(tmp_path):
    from raylm.report.collect import read_run
    from raylm.report.page import render

    error = "CapacityError: train.num_workers=4 x train.cpus_per_worker=0.5 leaves 0 of the 2 CPUs for Ray Data"
    html = render(read_run(_run(tmp_path, {"command": "train", "state": "failed", "error": error, "pid": 1,
                                           "host": "elsewhere", "started": 0, "ended": 1})))
    assert "<b>train failed</b>" in html and error in html
    assert "Nothing else to report" in html and "nothing to report yet" not in html


def test_an_interrupted_run_says_how_to_continue_and_a_finished_one_says_nothing(tmp_path):
    from raylm.report.collect import read_run
    from raylm.report.page import render

    html = render(read_run(_run(tmp_path, {"command": "train", "state": "running", "pid": 2 ** 22 + 12345,
                                           "host": __import__("socket").gethostname(), "started": 0})))
    assert "<b>train interrupted</b>" in html and "rerun its command to continue" in html  # its process is gone
    finished = render(read_run(_run(tmp_path / "b", {"command": "train", "state": "finished"})))
    assert "finished" not in finished.split("</h1>", 1)[1] and "nothing to report yet" in finished


def test_the_stages_table_shows_the_train_checkpoint_the_run_went_on_with():
    from pathlib import Path

    from raylm.report.page import _stages_section

    train = {"checkpoint": "ckpt-epoch-4", "seconds": 12.0, "metrics": {"epoch": 5, "val_accuracy": 0.8962},
             "best": {"epoch": 4, "val_accuracy": 0.918}}
    html = _stages_section({"stages": {"train": train}, "session": None, "run_dir": Path("/runs/r")})
    assert "0.918" in html and "0.8962" not in html  # the last epoch's accuracy was shown beside epoch 4's checkpoint
    older = _stages_section({"stages": {"train": {k: v for k, v in train.items() if k != "best"}}, "session": None,
                             "run_dir": Path("/runs/r")})
    assert "0.8962" in older  # a record from before "best" existed still shows what it has
