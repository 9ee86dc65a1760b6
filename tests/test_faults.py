"""Fault injection: processes killed on purpose (Train workers, a Tune driver, Serve replicas, the
pipeline) and storage that fails; the runs survive and lose nothing they had saved.

One fast case of each kind runs in the default suite; the longer ones are in the opt-in ``faults``
tier (``pytest -m faults``)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from raylm.train.checkpoint import load_checkpoint, read_meta, run_checkpoints

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------ helpers


def _latest_epoch(train_dir: Path) -> int:
    epochs = [0]
    for checkpoint in run_checkpoints(train_dir):
        try:
            epochs.append(int(read_meta(checkpoint)["epoch"]))
        except Exception:  # noqa: BLE001 - one Ray is writing or deleting right now
            continue
    return max(epochs)


def _alive_actor_pids(class_name: str) -> list[int]:
    """PIDs of this cluster's live actors of ``class_name`` (State API: never another Ray's processes)."""
    import ray
    from ray.util.state import list_actors

    actors = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")], raise_on_missing_output=False)
    return sorted(int(a.pid) for a in actors if a.pid)


class WorkerKiller(threading.Thread):
    """Kills one Ray Train worker (SIGKILL to its PID) once the run has saved ``after_epoch``, i.e.
    while the next epoch trains; records when and what was on disk at that moment."""

    def __init__(self, train_dir: Path, after_epoch: int = 1, kills: int = 1, deadline_s: float = 300):
        super().__init__(daemon=True)
        self.train_dir, self.after_epoch, self.kills, self.deadline_s = train_dir, after_epoch, kills, deadline_s
        self.killed: list[dict] = []  # {"pid", "time", "saved_epoch"}

    def run(self) -> None:
        deadline = time.monotonic() + self.deadline_s
        target = self.after_epoch
        while len(self.killed) < self.kills and time.monotonic() < deadline:
            saved = _latest_epoch(self.train_dir)
            pids = _alive_actor_pids("RayTrainWorker") if saved >= target else []
            if pids:
                os.kill(pids[-1], signal.SIGKILL)
                self.killed.append({"pid": pids[-1], "time": time.time(), "saved_epoch": saved})
                target = saved + 1  # the next kill: after the restarted group saved another epoch
                time.sleep(1.0)
            time.sleep(0.05)


def _epochs_redone(history: list[dict], kill: dict) -> int:
    """Epochs trained again because of the kill: from the epoch the run resumed at to the one in
    progress when it died (which counts as one even if it was nearly done)."""
    first_after = min(row["epoch"] for row in history if row["time"] > kill["time"])
    return kill["saved_epoch"] + 1 - first_after + 1


# ------------------------------------------------------------------ 1. Train worker killed mid-epoch


def test_a_killed_train_worker_restarts_from_the_latest_checkpoint(ray_local, tiny_config):
    from raylm.train import fit

    cfg = tiny_config("image", "train.epochs=4", "train.batch_size=4", "train.max_failures=1", "train.seed=3",
                      "train.name=killed")
    killer = WorkerKiller(cfg.run_dir / "train", after_epoch=1)
    killer.start()
    outcome = fit(cfg)
    killer.join(timeout=5)
    assert len(killer.killed) == 1, "no worker was killed: the run ended before its first checkpoint was seen"
    kill = killer.killed[0]
    assert kill["pid"] not in _alive_actor_pids("RayTrainWorker")
    history = outcome.history
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    # Saved epochs were not trained again; at most the epoch in progress was.
    assert all(row["time"] < kill["time"] for row in history if row["epoch"] <= kill["saved_epoch"])
    assert _epochs_redone(history, kill) <= 1
    assert outcome.metrics["val_accuracy"] > 0.75  # two balanced classes: chance is 0.5


def test_a_kill_beyond_max_failures_fails_clearly_and_keeps_the_latest_checkpoint(ray_local, tiny_config):
    from raylm.train import TrainingFailed, fit

    cfg = tiny_config("image", "train.epochs=30", "train.batch_size=4", "train.max_failures=0", "train.name=killed-for-good")
    killer = WorkerKiller(cfg.run_dir / "train", after_epoch=1)
    killer.start()
    with pytest.raises(TrainingFailed) as failure:
        fit(cfg)
    killer.join(timeout=5)
    assert len(killer.killed) == 1
    message = str(failure.value)
    assert "train.max_failures=0" in message and "the latest checkpoint, epoch" in message
    latest = Path(message.split(" is ", 1)[1].split(" (train.resume_from", 1)[0])
    loaded = load_checkpoint(latest)  # whole: it loads, with its weights and its epoch
    assert loaded.meta["epoch"] >= killer.killed[0]["saved_epoch"] >= 1
    assert loaded.labels == ["horizontal", "vertical"]


# ------------------------------------------------------------------ storage faults

_WRITE_OVER_CHECKPOINT = """
import resource, sys, torch
from pathlib import Path
from raylm.config import load_config
from raylm.models import build_model
from raylm.train.checkpoint import save_checkpoint_atomic
limit = int(sys.argv[2])
cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", "task.labels=[a,b]"])
torch.manual_seed(1)
model = build_model(cfg, 2)
if limit:  # the storage is "full": no file may grow past `limit` bytes (EFBIG; Python ignores SIGXFSZ)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    save_checkpoint_atomic(Path(sys.argv[1]), model, cfg, ["a", "b"], epoch=2)
except OSError as err:
    print(f"{type(err).__name__}: {err}", file=sys.stderr)
    sys.exit(3)
"""


def _good_checkpoint(final: Path) -> dict[str, bytes]:
    import torch

    from raylm.config import load_config
    from raylm.models import build_model
    from raylm.train.checkpoint import save_checkpoint_atomic

    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", "task.labels=[a,b]"])
    torch.manual_seed(0)
    save_checkpoint_atomic(final, build_model(cfg, 2), cfg, ["a", "b"], epoch=1)
    return {p.name: p.read_bytes() for p in final.iterdir()}


def _write_over(final: Path, limit: int = 0):
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-c", _WRITE_OVER_CHECKPOINT, str(final), str(limit)], env=env,
                          capture_output=True, text=True, timeout=120)


def _assert_untouched(final: Path, before: dict[str, bytes]) -> None:
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before
    assert load_checkpoint(final).meta["epoch"] == 1
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no temporary or half-written sibling


def test_a_full_disk_names_the_path_and_keeps_the_previous_checkpoint(tmp_path):
    final = tmp_path / "run" / "checkpoint_000001"
    before = _good_checkpoint(final)
    proc = _write_over(final, limit=4096)  # smaller than the weights
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert f"StorageError: [Errno 27] cannot write {final}: File too large (the previous copy is intact)" in proc.stderr
    _assert_untouched(final, before)


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory the process cannot write: a read-only tmpfs where we may mount one (root), else
    a mode-0555 directory (which root would write anyway)."""
    import subprocess

    root = tmp_path / "ro"
    root.mkdir()
    if os.geteuid() != 0:
        yield root, lambda: root.chmod(0o555)
        root.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)], capture_output=True).returncode:
        pytest.skip("root without mount permission: no way to make a read-only directory")
    try:
        yield root, lambda: subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_read_only_path_names_the_path_and_keeps_the_previous_checkpoint(read_only_dir):
    root, make_read_only = read_only_dir
    final = root / "checkpoint_000001"
    before = _good_checkpoint(final)
    make_read_only()
    proc = _write_over(final)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert f"cannot write {final}:" in proc.stderr and "StorageError" in proc.stderr, proc.stderr[-2000:]
    _assert_untouched(final, before)


def test_a_full_disk_while_writing_run_records_keeps_the_previous_record(tmp_path):
    import subprocess
    import sys

    from raylm.atomic import atomic_write_text

    record = tmp_path / "trials.json"
    atomic_write_text(record, json.dumps({"trials": [1, 2]}))
    script = ("import resource, sys; from pathlib import Path; from raylm.atomic import atomic_write_text\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (8, 8))\n"
              "atomic_write_text(Path(sys.argv[1]), 'x' * 1000)\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", script, str(record)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and f"cannot write {record}: File too large" in proc.stderr, proc.stderr[-2000:]
    assert json.loads(record.read_text()) == {"trials": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["trials.json"]
