"""``raylm runs``: one line per run under a storage path, and the status file that tells a
finished run from one that is still running or was interrupted."""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from raylm.records import RunSummary
from raylm.report.collect import read_json, summarize

STATUS = "status.json"


def _write_status(run_dir: Path, status: dict[str, Any]) -> None:
    log_dir = run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    tmp = log_dir / f".{STATUS}.tmp"
    tmp.write_text(json.dumps(status, indent=2))
    os.replace(tmp, log_dir / STATUS)


@contextmanager
def run_status(run_dir: Path, command: str) -> Iterator[None]:
    """``<run>/logs/status.json``: running (with this process's pid and host) while the block runs,
    then finished, failed (with the error) or interrupted (raylm itself never exits mid-run, so a
    SystemExit there is a signal handler's, e.g. Ray Train's on Ctrl-C). A run whose process died without a
    word still says running; ``raylm runs`` sees its pid gone and calls it interrupted."""
    status = {"command": command, "state": "running", "pid": os.getpid(), "host": socket.gethostname(),
              "started": time.time()}
    _write_status(run_dir, status)
    try:
        yield
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C; Ray Train's own SIGINT handler calls sys.exit
        _write_status(run_dir, status | {"state": "interrupted", "ended": time.time()})
        raise
    except BaseException as err:
        _write_status(run_dir, status | {"state": "failed", "error": f"{type(err).__name__}: {err}"[:500],
                                         "ended": time.time()})
        raise
    _write_status(run_dir, status | {"state": "finished", "ended": time.time()})


def run_state(run_dir: Path) -> str:
    """finished / failed / interrupted / running, or ``-`` for a run made without the CLI."""
    status = read_json(run_dir / "logs" / STATUS)
    if not status:
        return "-"
    state = status.get("state", "-")
    if state == "running" and status.get("host") == socket.gethostname() and not _alive(status.get("pid")):
        return "interrupted"
    return state


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


# What a `raylm runs` row reads of a run in object storage (the sweep's trial files stay there).
_SUMMARY_FILES = ("pipeline.json", "tune/raylm_sweep.json", "tune/trials.json", "logs/status.json")


def list_runs(storage_path: str | Path) -> list[RunSummary]:
    """Every run directly under ``storage_path`` (a local path or a URI), newest first."""
    from raylm.storage import StoragePath, committed, public_paths, run_view

    location = StoragePath.of(storage_path)
    if location.is_local:
        return _with_serving_state(_list_local_runs(location.local_path))
    runs = []
    for run in location.iterdir():
        if run.name.startswith("_"):  # _cache/: shared data, not a run
            continue
        marker = run.join("_COMMITTED")
        with run_view(run, only=_SUMMARY_FILES) as view:
            row = summarize(view)
            if row is None:
                continue
            row = RunSummary.model_validate(public_paths(row.model_dump()) | {"state": run_state(view)})
        written = (committed(run) and marker.fs.get_file_info(marker.path).mtime)
        row.modified = written.timestamp() if written else 0.0
        runs.append(row)
    return _with_serving_state(sorted(runs, key=lambda r: -r.modified))


def serving_state(url: str | None, timeout_s: float = 0.5) -> str:
    """``up`` when the served URL's ``/healthz`` answers as a raylm app does (200, or 503 naming a moved
    artifact: the loaded model still answers); ``down`` when nothing, or something else, answers there
    from this machine within ``timeout_s`` (the app was deleted, or the Ray that ran it ended: a pipeline's
    embedded Ray ends with its process); ``-`` for a run that never served. A run record keeps the URL
    it served at; only asking it tells whether it still does."""
    if not url:
        return "-"
    import urllib.error
    import urllib.request

    try:
        # A record names the app's /predict; its health is beside it, at the app's route prefix.
        base = url.rstrip("/").removesuffix("/predict")
        with urllib.request.urlopen(base + "/healthz", timeout=timeout_s) as answer:
            body = answer.read(4096)
    except urllib.error.HTTPError as err:
        if err.code != 503:
            return "down"
        body = err.read(4096)
    except (OSError, ValueError):  # refused, timed out, not an http URL
        return "down"
    try:
        health = json.loads(body)
    except ValueError:
        return "down"
    return "up" if isinstance(health, dict) and "modality" in health else "down"


def _with_serving_state(runs: list[RunSummary]) -> list[RunSummary]:
    """Every served run's URL asked at once (a refused port answers at once, an unreachable host after
    the timeout)."""
    served = [r for r in runs if r.url]
    if served:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(16, len(served))) as pool:
            for run, state in zip(served, pool.map(lambda r: serving_state(r.url), served)):
                run.serving = state
    return runs


def _list_local_runs(storage_path: Path) -> list[RunSummary]:
    runs = []
    for run_dir in sorted(Path(storage_path).expanduser().iterdir() if Path(storage_path).expanduser().is_dir() else []):
        if not run_dir.is_dir():
            continue
        row = summarize(run_dir)
        if row is None:
            continue
        row.state = run_state(run_dir)
        runs.append(row)
    return sorted(runs, key=lambda r: -r.modified)


def _live(run: RunSummary) -> str:
    """The canary / shadow line the replicas last wrote; only "last:" when the app no longer answers."""
    if not run.shadow:
        return "-"
    return f"last: {run.shadow}" if run.serving == "down" else run.shadow


def format_runs(runs: list[RunSummary]) -> str:
    # A pipeline's accuracy is its served model's (the table showed the dense retrain's 0.937 for a served 0.932);
    # a sweep's or a training run's is its best trial's or epoch's.
    header = ("run", "kind", "stage", "state", "accuracy", "served at", "serving", "modified", "live (canary / shadow)")
    rows = [(r.name, r.kind, r.stage, r.state, _accuracy(r),
             r.url or "-", r.serving, time.strftime("%Y-%m-%d %H:%M", time.localtime(r.modified)), _live(r)) for r in runs]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows])


def _accuracy(run: RunSummary) -> str:
    shown = run.served_accuracy if run.served_accuracy is not None else run.best_accuracy
    return f"{shown:.3f}" if shown is not None else "-"
