"""Fault injection shared by tests/integration/test_faults.py and benchmarks/faults.py: kill a Ray Train worker
or a Serve replica by PID (found through this cluster's State API, never another Ray's processes),
keep a steady HTTP load, wait with a deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

from raylm.train.checkpoint import read_meta, run_checkpoints


def latest_epoch(train_dir: Path) -> int:
    epochs = [0]
    for checkpoint in run_checkpoints(train_dir):
        try:
            epochs.append(int(read_meta(checkpoint)["epoch"]))
        except Exception:  # noqa: BLE001 - one Ray is writing or deleting right now
            continue
    return max(epochs)


def alive_actor_pids(class_name: str) -> list[int]:
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
            saved = latest_epoch(self.train_dir)
            pids = alive_actor_pids("RayTrainWorker") if saved >= target else []
            if pids:
                os.kill(pids[-1], signal.SIGKILL)
                self.killed.append({"pid": pids[-1], "time": time.time(), "saved_epoch": saved})
                target = saved + 1  # the next kill: after the restarted group saved another epoch
                time.sleep(1.0)
            time.sleep(0.05)


def epochs_redone(history: list[dict], kill: dict) -> int:
    """Epochs trained again because of the kill: from the epoch the run resumed at to the one in
    progress when it died (which counts as one even if it was nearly done)."""
    first_after = min(row["epoch"] for row in history if row["time"] > kill["time"])
    return kill["saved_epoch"] + 1 - first_after + 1


class SteadyLoad(threading.Thread):
    """``concurrency`` clients posting one image each, back to back, until stopped; every answer's
    status (or the exception, for a connection error or a timeout) and how long it took."""

    def __init__(self, url: str, body: dict, concurrency: int, timeout_s: float):
        super().__init__(daemon=True)
        self.url, self.body, self.concurrency, self.timeout_s = url, body, concurrency, timeout_s
        self.stop = threading.Event()
        self.answers: list[tuple[float, object, float]] = []  # (sent at, status or exception name, seconds)
        self.lock = threading.Lock()

    def _client(self) -> None:
        import requests

        with requests.Session() as session:
            while not self.stop.is_set():
                sent = time.time()
                try:
                    status = session.post(self.url, json=self.body, timeout=self.timeout_s).status_code
                except requests.RequestException as err:
                    status = type(err).__name__
                with self.lock:
                    self.answers.append((sent, status, time.time() - sent))

    def run(self) -> None:
        clients = [threading.Thread(target=self._client, daemon=True) for _ in range(self.concurrency)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()

    def failed(self) -> list[tuple[float, object, float]]:
        return [a for a in self.answers if a[1] != 200]


def running_replicas(app: str) -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in status.deployments.values())


@contextlib.contextmanager
def two_node_cluster(head_cpus: int = 3, node_cpus: int = 2):
    """A real two-node Ray (``ray.cluster_utils.Cluster``) in place of the shared local Ray, which the
    ``ray_local`` fixture restarts for later tests. Yields ``(cluster, node)``: ``cluster.remove_node(node)``
    is a lost node. The defaults: 2-CPU workers, one fits each node, and once the other node is gone the
    head (3 CPUs) holds one worker and still has a CPU for Ray Data."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus})
    node = cluster.add_node(num_cpus=node_cpus)
    try:
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        yield cluster, node
    finally:
        ray.shutdown()
        cluster.shutdown()


def wait_for(predicate, deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


from tests.helpers.paths import REPO  # noqa: E402


def raylm_cli(*args: str, config=None, config_path: Path | None = None, **popen_kwargs):
    """``python -m raylm.cli <args>`` as a second driver on this test's cluster (``RAY_ADDRESS``),
    running this checkout's raylm; ``config`` is written to ``config_path`` and passed as ``--config``."""
    import subprocess
    import sys

    import ray
    import yaml

    if config is not None:
        config_path.write_text(yaml.safe_dump(config.to_dict()))
        args = (*args, "--config", str(config_path))
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address, PYTHONPATH=str(REPO))
    popen_kwargs.setdefault("stdout", subprocess.DEVNULL)
    popen_kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "raylm.cli", *args], cwd=REPO, env=env, text=True, **popen_kwargs)
