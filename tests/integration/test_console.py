"""The console people read and the run report: the session's Quick start run (tests/helpers/tracked_pipeline.py:
``jobs/pipeline.py`` on its own embedded Ray, in a subprocess, as a user runs it), its console, its logs,
its report.html, and ``raylm runs`` over it and over a training run interrupted with Ctrl-C."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

# The session's pipeline and one training run through the CLI: minutes on a busy machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

from tests.helpers.cli import RAY_LINE, _env
from tests.helpers.paths import REPO
from tests.helpers.ports import free_port as _free_port
from tests.helpers.tracked_pipeline import NAME, RETRAIN_EPOCHS, TRIALS, tiny_cli_overrides


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raylm.cli", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def piped_run(tracked_pipeline):
    """The session's Quick start run (tests/helpers/tracked_pipeline.py): its output piped (as under
    ``ray job submit``), not verbose; MLflow tracking on (test_mlflow.py reads that side)."""
    return tracked_pipeline.root, tracked_pipeline.done


def test_pipeline_console_shows_progress_results_and_no_ray_lines(piped_run):
    root, done = piped_run
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]
    lines = console.splitlines()
    ray_lines = [line for line in lines if RAY_LINE.search(line)]
    assert not ray_lines, ray_lines[:10]
    run_dir = root / "runs" / NAME
    record = json.loads((run_dir / "pipeline.json").read_text())
    # Progress per stage, the result table, the URL and the report path, all on the console.
    completed, epochs = record["stages"]["tune"]["completed"], RETRAIN_EPOCHS  # ASHA may stop one of the TRIALS
    assert record["stages"]["tune"]["trials"] == TRIALS
    assert any(line.startswith("[sweep] done") and f"completed {completed}" in line for line in lines), console
    assert any(line.startswith(f"[retrain] {epochs}/{epochs} epochs") for line in lines), console
    for stage in ("compress", "evaluate", "serve"):
        assert any(line.startswith(f"[{stage}] done") for line in lines), console
    assert record["stages"]["serve"]["url"] in console and f"report    {run_dir / 'report.html'}" in console
    assert len(lines) <= 60, len(lines)
    # ... and Ray's own lines went to the run's log, with the Ray session recorded beside it.
    ray_log = (run_dir / "logs" / "ray.log").read_text()
    # (lines a Ray actor printed, forwarded by Ray: the sweep's trials; the one-worker retrain runs in the driver)
    assert RAY_LINE.search(ray_log) and re.search(r"\(\w+ pid=\d+\)", ray_log)
    session = json.loads((run_dir / "logs" / "ray_session.json").read_text())
    assert Path(session["logs_dir"]).is_dir() and "raylet.out" in os.listdir(session["logs_dir"])


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self.external: list[str] = []
        self.scripts = 0
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if tag == "script":
            self.scripts += 1
        if tag in ("link", "script", "iframe") or (tag == "a" and "://" in (attrs.get("href") or "")):
            self.external.append(f"{tag} {attrs}")
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def test_report_is_self_contained_and_holds_every_section(piped_run, ray_local):
    root, done = piped_run
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    run_dir = root / "runs" / NAME
    report = run_dir / "report.html"
    assert report.stat().st_size < 2e6
    page = _Page()
    page.feed(report.read_text())
    assert page.scripts == 0 and not page.external, page.external
    assert {"Stages", "Certificate of the artifact", "How it is served", "Sweep: the Pareto front", "Training curves",
            "Confusion matrix", "Augmentation preview"} <= set(page.headings), page.headings
    assert len(page.images) == 4  # Pareto, curves, confusion, augmentation preview
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    html = report.read_text()
    record = json.loads((run_dir / "pipeline.json").read_text())
    assert record["stages"]["serve"]["url"] in html and "raylm serve --artifact" in html
    assert record["stages"]["compress"]["artifact"] in html  # the certificate names the artifact it certifies
    # Its latency ratio is the one the compression gate decided on (paired), not the two p50s' quotient.
    ratios = json.loads((Path(record["stages"]["compress"]["artifact"]) / "artifact.json").read_text()).get(
        "report", {}).get("ratios") or {}
    assert (f"x{ratios['latency_ratio']:.3g} (paired)" if ratios.get("latency_ratio_timing") == "paired"
            else "(timed apart)") in html

    # `raylm report` rewrites it at any time, from the files alone.
    report.unlink()
    again = _cli("report", str(run_dir), "--no-preview", timeout=300)
    assert again.returncode == 0 and again.stdout.strip() == str(report), again.stdout + again.stderr
    assert "Confusion matrix" in report.read_text()


def _webdriver_log(html: Path) -> tuple[list[dict], list[list]]:
    """The browser console of ``html`` opened in headless Chromium (through chromedriver's W3C API),
    and each image's (complete, naturalWidth)."""
    import requests

    port = _free_port()
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/status", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "chromedriver did not start"
                time.sleep(0.2)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
                "goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]}}}}
        session = requests.post(f"{base}/session", json=caps, timeout=120).json()["value"]["sessionId"]
        url = f"{base}/session/{session}"
        requests.post(f"{url}/url", json={"url": html.as_uri()}, timeout=60).raise_for_status()
        log = requests.post(f"{url}/se/log", json={"type": "browser"}, timeout=60).json()["value"]
        images = requests.post(f"{url}/execute/sync", json={
            "script": "return Array.from(document.images).map(i => [i.complete, i.naturalWidth])", "args": []},
            timeout=60).json()["value"]
        requests.delete(url, timeout=60)
        return log, images
    finally:
        driver.terminate()
        driver.wait(timeout=30)


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="headless check needs Debian's chromium and chromium-driver")
def test_report_renders_in_headless_chromium_without_console_errors(piped_run):
    root, done = piped_run
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    log, images = _webdriver_log(root / "runs" / NAME / "report.html")
    assert not [entry for entry in log if entry.get("level") in ("SEVERE", "WARNING")], log
    assert len(images) == 4 and all(complete and width > 0 for complete, width in images), images


def test_runs_lists_a_finished_and_an_interrupted_run(piped_run, data_root, ray_local):
    """A verbose training run interrupted with Ctrl-C after its first epoch: its console carried
    Ray's stream (-v), and ``raylm runs`` tells it apart from the finished pipeline."""
    root, done = piped_run
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    args = tiny_cli_overrides(root, data_root, "stopped") + ["train.num_workers=1", "train.epochs=50"]
    proc = subprocess.Popen([sys.executable, "-m", "raylm.cli", "train", "-v", *args], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    train_dir = root / "runs" / "stopped" / "train"
    try:
        deadline = time.monotonic() + 400
        while not list(train_dir.glob("checkpoint_*/raylm.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "no first checkpoint"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert RAY_LINE.search(output), output[-2000:]  # -v: Ray's stream on the console
    # A training run alone has a report too: its curves, nothing it does not have.
    reported = _cli("report", str(train_dir.parent), "--no-preview", timeout=120)
    assert reported.returncode == 0, reported.stderr
    page = _Page()
    page.feed((train_dir.parent / "report.html").read_text())
    assert page.headings == ["Training curves"] and len(page.images) == 1
    # With its preview: said before Ray starts for it, and the preview's data read adds no "[raylm data]" line.
    reported = _cli("report", str(train_dir.parent), timeout=180)
    assert reported.returncode == 0, reported.stderr
    assert "drawing the augmentation preview once" in reported.stderr and "[raylm data]" not in reported.stderr, reported.stderr
    page = _Page()
    page.feed((train_dir.parent / "report.html").read_text())
    assert "Augmentation preview" in page.headings and len(page.images) == 2, page.headings

    listed = _cli("runs", str(root / "runs"), timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    piped_url = json.loads((root / "runs" / NAME / "pipeline.json").read_text())["stages"]["serve"]["url"]
    assert rows[NAME][1:4] == ["pipeline", "serve", "finished"] and piped_url in rows[NAME]
    # The piped pipeline's embedded Ray ended with it: its URL no longer answers, and the row says so.
    assert rows[NAME][rows[NAME].index(piped_url) + 1] == "down"
    assert rows["stopped"][1] == "train" and rows["stopped"][2].startswith("train") and "interrupted" in rows["stopped"]


def test_piped_progress_prints_about_ten_lines_a_stage_and_always_the_last():
    import io

    from raylm.console import Console

    out = io.StringIO()
    bar = Console(out, out, live=False).bar("retrain", 30, "epochs")
    for epoch in range(1, 31):
        bar.update(epoch, f"epoch {epoch}", say=True)
    lines = out.getvalue().splitlines()
    assert 10 <= len(lines) <= 12, lines
    assert lines[0].startswith("[retrain] 1/30 epochs") and lines[-1].startswith("[retrain] 30/30 epochs"), lines
