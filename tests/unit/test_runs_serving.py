"""``raylm runs``' serving column (raylm/report/runs.py ``serving_state``): a run record keeps the URL it
served at; whether anything still answers there is asked over real HTTP (a stand-in server on loopback
answering as a raylm app's /healthz does, or not)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def _server(status: int, body: bytes):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            code = status if self.path == "/app/healthz" else 404
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body if code != 404 else b'{"detail": "Not Found"}')

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("status, body, expected", [
    (200, json.dumps({"status": "ok", "modality": "text", "tiers": ["int8"]}).encode(), "up"),
    (503, json.dumps({"status": "unhealthy", "modality": "text", "reason": "moved"}).encode(), "up"),  # still answers
    (200, b"<html>some other server</html>", "down"),
    (200, json.dumps({"status": "ok"}).encode(), "down"),  # not a raylm app's health
    (500, b"{}", "down"),
])
def test_the_served_url_is_asked_whether_it_still_serves(status, body, expected):
    from raylm.report.runs import serving_state

    server = _server(status, body)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/app"
        assert serving_state(url) == expected
        assert serving_state(url + "/") == expected
        assert serving_state(url + "/predict") == expected  # what a pipeline record names
        assert serving_state(f"http://127.0.0.1:{server.server_address[1]}/elsewhere") == "down"  # a 404 there
    finally:
        server.shutdown()
        server.server_close()


def test_a_url_nothing_listens_on_is_down_and_no_url_is_a_dash():
    from raylm.report.runs import format_runs, serving_state, _with_serving_state
    from raylm.records import RunSummary

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert serving_state(f"http://127.0.0.1:{port}") == "down"
    assert serving_state(None) == "-" and serving_state("not a url") == "down"
    runs = _with_serving_state([RunSummary(name="a", path="/a", kind="pipeline", stage="serve", modified=0.0,
                                           url=f"http://127.0.0.1:{port}"),
                                RunSummary(name="b", path="/b", kind="train", stage="train", modified=0.0)])
    runs[0].shadow = "fp32 31.2% int8 68.8% of 154"  # what the stopped app's replicas last wrote
    lines = format_runs(runs).splitlines()
    assert lines[0].split()[4:8] == ["accuracy", "served", "at", "serving"]
    assert lines[1].split()[5:7] == [f"http://127.0.0.1:{port}", "down"] and lines[2].split()[5:7] == ["-", "-"]
    assert lines[1].endswith("last: fp32 31.2% int8 68.8% of 154") and lines[2].endswith("-")


def test_a_training_runs_best_accuracy_is_its_best_epochs_not_its_newest(tmp_path):
    """The newest checkpoint's own epoch is often not the best (a user's run listed 0.907, its epoch 9
    had 0.940); its history holds every epoch."""
    from raylm.report.collect import summarize

    history = [{"epoch": e, "val_accuracy": a} for e, a in [(1, 0.77), (2, 0.94), (3, 0.907)]]
    checkpoint = tmp_path / "run" / "train" / "checkpoint_000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "raylm.json").write_text(json.dumps({"epoch": 3, "metrics": history[-1], "history": history,
                                                       "config": {"train": {"epochs": 3}}}))
    row = summarize(tmp_path / "run")
    assert (row.kind, row.stage, row.best_accuracy) == ("train", "train(3/3)", 0.94)


def test_a_pipelines_accuracy_in_the_table_is_its_served_models():
    """A user read `best acc 0.937` (the dense retrain's) for a pipeline that served a model of 0.932."""
    from raylm.records import RunSummary
    from raylm.report.runs import format_runs

    runs = [RunSummary(name="p", path="/p", kind="pipeline", stage="serve", modified=0.0, best_accuracy=0.937,
                       served_accuracy=0.932),
            RunSummary(name="t", path="/t", kind="train", stage="train(3/3)", modified=0.0, best_accuracy=0.94)]
    lines = format_runs(runs).splitlines()
    assert lines[1].split()[4] == "0.932" and lines[2].split()[4] == "0.940"


def test_writing_a_runs_report_does_not_make_it_the_newest(tmp_path):
    """`raylm report <run>` wrote report.html into the run folder, whose time was the run's `modified`:
    the table's order changed each time a report was written."""
    import os

    from raylm.report.collect import summarize

    run = tmp_path / "r"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "status.json").write_text('{"command": "train", "state": "failed"}')
    os.utime(run / "logs" / "status.json", (1_000_000, 1_000_000))
    (run / "report.html").write_text("<html></html>")  # the folder's own time is now
    assert summarize(run).modified == 1_000_000


def test_raylm_runs_takes_the_storage_path_override_spelling_too(tmp_path, capsys):
    """`raylm runs train.storage_path=<dir>` (how every other verb is given it) read the whole override as the
    path: "train.storage_path=/x is not a directory". Another key is refused naming the verb's argument."""
    from raylm.cli import main

    assert main(["runs", f"train.storage_path={tmp_path}"]) == 0
    assert f"no raylm runs under {tmp_path}" in capsys.readouterr().out
    assert main(["runs", "train.epochs=3"]) == 2
    assert "raylm runs takes a storage path" in capsys.readouterr().err
