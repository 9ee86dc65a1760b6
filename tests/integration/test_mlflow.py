"""MLflow tracking and the model registry against a real ``mlflow server`` (sqlite backend store,
local artifact destination) that the module starts on a free port and stops: a pipeline's sweep is
one parent run with a child per trial carrying its per-epoch metrics, the served artifact is a
registered version whose tags are its certificate, ``raylm serve --model models:/...`` answers like
the file artifact over real HTTP, and a killed and restarted worker group adds no run.

The server comes from ``.venv-mlflow/`` (setup.sh) or ``RAYLM_MLFLOW_SERVER``; without one these tests
fail saying so (they never skip)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import requests

from raylm.config import ConfigError
from tests.helpers.ports import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def tracking(mlflow_server):
    """Overrides that track into a fresh experiment of the server, and a client to read it back."""
    from mlflow import MlflowClient

    experiment = f"test-{uuid.uuid4().hex[:10]}"
    client = MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)
    return (f"tracking.mlflow.uri={mlflow_server.uri}", f"tracking.mlflow.experiment={experiment}"), client, experiment


def _runs(client, experiment: str):
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=1000)


# ----------------------------------------------------------------------------- no Ray: config and CLI


def test_tracking_is_off_by_default_and_bad_settings_name_the_field(tiny_config):
    from raylm.tracking import tracked_run

    cfg = tiny_config("image")
    assert cfg.tracking.mlflow.uri is None
    with tracked_run(cfg, "train") as run:
        assert run is None
    assert not (cfg.run_dir / "mlflow_run.json").exists()
    for override, field in [("tracking.mlflow.uri=localhost:5000", "tracking.mlflow.uri"),
                            ("tracking.mlflow.uri=http://", "tracking.mlflow.uri"),  # reached Ray, then InvalidUrl
                            ("tracking.mlflow.experiment=' '", "tracking.mlflow.experiment"),
                            ("tracking.mlflow.model_name=a/b", "tracking.mlflow.model_name"),
                            ("tracking.mlflow.bogus=1", "tracking.mlflow.bogus")]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            tiny_config("image", override)


def test_serve_model_needs_a_server_and_an_existing_version(mlflow_server, monkeypatch, capsys):
    from raylm.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["serve", "--model", "models:/nothing/1"]) == 2
    assert "tracking.mlflow.uri" in capsys.readouterr().err
    assert main(["serve", "--model", "models:/nothing/1", f"tracking.mlflow.uri={mlflow_server.uri}"]) == 2
    assert "models:/nothing/1" in capsys.readouterr().err
    assert main(["serve", "--model", "nothing/1", f"tracking.mlflow.uri={mlflow_server.uri}"]) == 2
    assert "not models:/<name>/<version>" in capsys.readouterr().err


def test_a_tracking_server_that_does_not_answer_is_refused_before_ray_starts(capsys):
    """With the server down the run waited ~4 minutes in MLflow's retries, then failed with nothing trained."""
    from raylm.cli import main

    down = f"http://127.0.0.1:{free_port()}"
    config = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "image.yaml"
    assert main(["train", "--config", str(config), f"tracking.mlflow.uri={down}"]) == 2
    err = capsys.readouterr().err
    assert f"tracking.mlflow.uri: no MLflow server answers at {down}" in err
    assert "Started a local Ray instance" not in err


def test_epoch_metrics_a_down_server_missed_are_queued_and_sent_with_a_later_epoch(mlflow_server, tracking, caplog):
    """A server down mid-training held each epoch ~4 minutes (MLflow's retries) and its metrics were lost:
    now the failed epoch's metrics wait, the next epochs only queue for a while (no call), and they all reach
    the run once the server answers."""
    from raylm.tracking import runs as tracking_runs

    _, client, experiment = tracking
    run_id = client.create_run(client.create_experiment(experiment)).info.run_id
    down = tracking_runs.TrackedRun(f"http://127.0.0.1:{free_port()}", run_id, "0")
    up = tracking_runs.TrackedRun(mlflow_server.uri, run_id, "0")
    try:
        tracking_runs.log_epoch(down, {"epoch": 1, "val_accuracy": 0.5, "time": 1.0})
        tracking_runs.log_epoch(down, {"epoch": 2, "val_accuracy": 0.6, "time": 2.0})
        assert "not logged to run" in caplog.text and "queued for run" in caplog.text  # epoch 2 did not call
        assert not client.get_metric_history(run_id, "val_accuracy")
        tracking_runs.log_epoch(up, {"epoch": 3, "val_accuracy": 0.7, "time": 3.0})
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_accuracy"))
        assert history == [(1, 0.5), (2, 0.6), (3, 0.7)]
        assert not tracking_runs._UNSENT[run_id]
    finally:
        tracking_runs._UNSENT.pop(run_id, None)
        tracking_runs._DOWN_UNTIL.pop(down.uri, None)


def test_epochs_queued_when_training_ends_are_sent_then_or_counted_as_lost(mlflow_server, tracking, caplog, tmp_path):
    """Epochs queued in the retry window after a failure were never sent when training ended inside it, under
    a FINISHED run and with no word (a user's server was back 40 s before the last epoch); a file logged as a
    stage ended with the server down failed the whole pipeline. Now the end of training sends the queue, or
    says how many values were not sent; a file that cannot be logged is a warning."""
    from raylm.tracking import runs as tracking_runs

    _, client, experiment = tracking
    run_id = client.create_run(client.create_experiment(experiment)).info.run_id
    up = tracking_runs.TrackedRun(mlflow_server.uri, run_id, "0")
    down = tracking_runs.TrackedRun(f"http://127.0.0.1:{free_port()}", run_id, "0")
    hook = tracking_runs.epoch_hook(up)
    try:
        tracking_runs._DOWN_UNTIL[up.uri] = float("inf")  # a failure a moment ago: epochs only queue
        for epoch in (1, 2, 3):
            hook({"epoch": epoch, "val_accuracy": epoch / 10, "time": float(epoch)})
        assert not client.get_metric_history(run_id, "val_accuracy")
        hook.close()  # training ended: the server answers again
        assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_accuracy")) == [
            (1, 0.1), (2, 0.2), (3, 0.3)]

        tracking_runs._DOWN_UNTIL[down.uri] = float("inf")
        tracking_runs.log_epoch(down, {"epoch": 4, "val_accuracy": 0.4, "time": 4.0})
        tracking_runs.epoch_hook(down).close()
        assert f"metric values of run {run_id} were not sent" in caplog.text and not tracking_runs._UNSENT[run_id]
        report = tmp_path / "report.html"
        report.write_text("<html></html>")
        assert tracking_runs.log_files(down, [report]) == []
        assert "report.html not logged to run" in caplog.text
    finally:
        tracking_runs._UNSENT.pop(run_id, None)
        for run in (up, down):
            tracking_runs._DOWN_UNTIL.pop(run.uri, None)


# ----------------------------------------------------------------------------- with Ray


def test_a_pipeline_is_a_parent_run_with_a_child_per_trial_and_registers_what_it_serves(
        ray_local, tracked_pipeline, mlflow_server):
    """The session's Quick start run (tests/helpers/tracked_pipeline.py: 2 trials of up to 2 epochs over
    the YAML's space under ASHA, a 3-epoch retrain), read back from the MLflow server."""
    from mlflow import MlflowClient
    from ray import serve

    from raylm.cli import main
    from tests.helpers.served import image_body
    from tests.helpers.tracked_pipeline import RETRAIN_EPOCHS, TRIAL_EPOCHS, TRIALS

    run = tracked_pipeline
    assert run.done.returncode == 0, run.console[-3000:]
    client = MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)
    experiment, model_name, run_dir = run.experiment, run.model_name, run.run_dir
    stages = json.loads((run_dir / "pipeline.json").read_text())["stages"]

    # 1 parent (the pipeline's run) + 1 child per trial, each with its epochs as steps.
    runs = _runs(client, experiment)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == stages["tune"]["trials"] == TRIALS
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.params["tune.num_samples"] == str(TRIALS)
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == parent.info.run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    # A completed trial leaves its record (raylm_trial.json); one ASHA stopped leaves none, and its run is KILLED.
    rows = {p.parent.name: json.loads(p.read_text()) for p in (run_dir / "tune" / "trials").glob("*/raylm_trial.json")}
    assert len(rows) == stages["tune"]["completed"] >= 1 and set(rows) <= {r.info.run_name for r in children}
    for child in children:
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        steps = sorted(m.step for m in history)  # one step per epoch the trial trained
        assert 1 <= len(steps) <= TRIAL_EPOCHS and steps == list(range(1, len(steps) + 1)), steps
        trial = rows.get(child.info.run_name)
        if trial is None:
            assert child.info.status == "KILLED", child.info
            continue
        assert child.info.status == "FINISHED"
        assert float(child.data.params["train.lr"]) == trial["params"]["train.lr"]
        assert trial["result"]["epochs"] == len(steps) == TRIAL_EPOCHS, trial["result"]  # completed: two steps
        assert max(m.value for m in history) == pytest.approx(trial["result"]["val_accuracy"])
        assert child.data.metrics["accuracy"] == pytest.approx(trial["result"]["accuracy"])
    # The retrain logged its epochs into the pipeline's run; the sweep's files and the certificate are its artifacts.
    retrain = client.get_metric_history(parent.info.run_id, "val_accuracy")
    assert sorted(m.step for m in retrain) == list(range(1, RETRAIN_EPOCHS + 1))
    assert retrain[-1].value == pytest.approx(stages["train"]["metrics"]["val_accuracy"])
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "trials.json", "certificate", "model"} <= files, files

    # The served artifact is a registered version whose tags are its certificate.
    certificate = json.loads((run_dir / "certificate.json").read_text())
    registered = certificate["registered"]
    assert registered == f"models:/{model_name}/1"
    version = client.get_model_version(model_name, "1")
    assert version.run_id == parent.info.run_id
    assert {k: v for k, v in version.tags.items() if k.startswith("raylm.")} == certificate["tags"]
    artifact_meta = json.loads((Path(stages["compress"]["artifact"]) / "artifact.json").read_text())
    tags = certificate["tags"]
    assert float(tags["raylm.accuracy"]) == stages["evaluate"]["accuracy"]
    assert float(tags["raylm.accuracy_drop_pts"]) == stages["evaluate"]["accuracy_drop_pts"]
    assert float(tags["raylm.p50_ms"]) == stages["compress"]["latency_ms"]
    assert tags["raylm.recipe"] == stages["compress"]["recipe"]
    # The gate's latency ratio, as it decided (paired where both models were timed in alternation).
    ratios = artifact_meta["report"]["ratios"]
    assert (float(tags["raylm.latency_ratio"]), tags["raylm.latency_ratio_timing"]) == (
        ratios["latency_ratio"], ratios["latency_ratio_timing"])
    assert tags["raylm.data_fingerprint"] == artifact_meta["lineage"]["data_fingerprint"]
    assert tags["raylm.model_sha256"] == artifact_meta["files"][artifact_meta["model_file"]]

    # `raylm serve --model models:/...` answers like the file artifact the pipeline served (the shared
    # run's own app is gone: the artifact it deployed, compress's, is served again here beside the registry's).
    port = free_port()
    common = ["--detach", f"tracking.mlflow.uri={mlflow_server.uri}", f"serve.port={port}", "serve.replica_cpus=0.25",
              "serve.max_replicas=1"]
    try:
        assert main(["serve", "--artifact", stages["compress"]["artifact"], "--name", "from-file", *common]) == 0
        assert main(["serve", "--model", registered, "--name", "registered", "--route-prefix", "/registered",
                     *common]) == 0
        # Held-out digits, which the pipeline's own app answered over HTTP while it served (run.answers).
        assert run.answers is not None, run.answer_error
        files = run.held_out[:16]
        body = image_body([path for path, _ in files])
        from_file = requests.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=60)
        from_registry = requests.post(f"http://127.0.0.1:{port}/registered/predict", json=body, timeout=60)
        assert from_file.status_code == from_registry.status_code == 200, from_registry.text
        file_predictions, registry_predictions = from_file.json()["predictions"], from_registry.json()["predictions"]
        assert [p["label"] for p in registry_predictions] == [p["label"] for p in file_predictions]
        assert [p["label"] for p in registry_predictions] == run.answers[:16]
        for mine, theirs in zip(registry_predictions, file_predictions):
            assert mine["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-6)
        # ... and its Open Inference version is the registry's ("1"), not the artifact's content hash.
        (tier,) = [t["tier"] for t in requests.get(f"http://127.0.0.1:{port}/registered/models", timeout=60).json()["tiers"]]
        metadata = requests.get(f"http://127.0.0.1:{port}/registered/v2/models/{tier}", timeout=60).json()
        assert metadata["versions"] == [registered.rsplit("/", 1)[1]], metadata
    finally:
        serve.shutdown()


@pytest.mark.faults  # a killed worker group: the fault tier (test_faults keeps the fast restart case)
def test_a_killed_worker_group_continues_its_run_and_adds_none(ray_local, tiny_config, tracking):
    from tests.helpers.faults import WorkerKiller

    from raylm.train import fit

    overrides, client, experiment = tracking
    cfg = tiny_config("image", "train.epochs=4", "train.batch_size=4", "train.max_failures=1", "train.seed=3",
                      "train.name=killed-tracked", *overrides)
    killer = WorkerKiller(cfg.run_dir / "train", after_epoch=1)
    killer.start()
    outcome = fit(cfg)
    killer.join(timeout=5)
    assert len(killer.killed) == 1, "no worker was killed: the run ended before its first checkpoint was seen"
    runs = _runs(client, experiment)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.params["train.max_failures"] == "1"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted({m.step for m in history}) == [1, 2, 3, 4]
    # The last value logged at each epoch is the one the run's history kept (a redone epoch logs twice).
    last = {}
    for metric in sorted(history, key=lambda m: m.timestamp):
        last[metric.step] = metric.value
    assert last == {row["epoch"]: pytest.approx(row["val_accuracy"]) for row in outcome.history}
