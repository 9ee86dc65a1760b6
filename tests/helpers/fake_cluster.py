"""A real autoscaling Ray cluster on this machine: Ray's ``fake_multinode`` node provider, whose
"nodes" are extra raylets the autoscaler starts and stops as demand comes and goes.

Ray 2.60's wheel lacks ``fake_multi_node/example.yaml``, so ``ray.cluster_utils.AutoscalingCluster``
cannot start; it would also run ``ray stop --force`` (every Ray on the machine). This helper writes
the autoscaling config itself and runs ``ray start --head --block`` in its own session with its own
ports, temp dir and token; ``stop()`` ends that process group and every process below it (the fake
nodes' raylets are children of the autoscaler's monitor process), then checks none is left.

Start-up: ~10-20 s for the head on an idle 2-core machine (the job API answering); a worker node
the autoscaler adds joins ~5-15 s after the demand appears (AUTOSCALER_UPDATE_INTERVAL_S=1).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
HEAD_TYPE, WORKER_TYPE = "ray.head.default", "ray.worker.cpu"


def free_port() -> int:
    """Ray's head takes fixed ports (tests/helpers/ports.py says why); bound on every interface here
    because the fake nodes reach the head by the machine's address."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (Ray workers start their own process groups: walk /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _in_session(sid: int) -> list[int]:
    """Processes of session ``sid`` (ours: ``start_new_session``), even ones re-parented to init."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition: Callable[[], Any], deadline_s: float, what: str, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {deadline_s:g} s: {what}")
        time.sleep(every_s)


@dataclass
class FakeCluster:
    """``with FakeCluster() as cluster:`` a 1-CPU head and 0..``max_workers`` 2-CPU worker nodes."""

    head_cpus: int = 1
    worker_cpus: int = 2
    max_workers: int = 2
    idle_timeout_minutes: float = 0.1  # fractions work: the autoscaler compares seconds (60 x this)
    object_store_bytes: int = 150 * 1024**2
    worker_resources: dict[str, float] = field(default_factory=dict)
    root: Path = field(init=False)
    proc: subprocess.Popen | None = field(init=False, default=None)

    def start(self, timeout_s: float = 180, attempts: int = 3) -> FakeCluster:
        """Start the head; again (fresh ports and dir) when it fails: under a heavy load a raylet
        misses Ray's fixed 30 s registration window and `ray start` gives up."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout_s)
            except (RuntimeError, TimeoutError):
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout_s: float) -> FakeCluster:
        # Short root: Ray's socket paths have a length limit.
        self.root = Path(tempfile.mkdtemp(prefix="rlfc", dir="/tmp"))
        token = self.root / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.ip = "127.0.0.1"
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        config = {
            "cluster_name": "raylm-fake",
            "max_workers": self.max_workers,
            "upscaling_speed": 10.0,
            "idle_timeout_minutes": self.idle_timeout_minutes,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": f"{self.ip}:{self.gcs_port}"},
            "available_node_types": {
                HEAD_TYPE: {"resources": {"CPU": self.head_cpus}, "node_config": {}, "max_workers": 0},
                WORKER_TYPE: {"resources": {"CPU": self.worker_cpus, "object_store_memory": self.object_store_bytes}
                              | self.worker_resources,
                              "node_config": {}, "min_workers": 0, "max_workers": self.max_workers},
            },
            "head_node_type": HEAD_TYPE,
            "auth": {}, "cluster_synced_files": [], "file_mounts": {}, "file_mounts_sync_continuously": False,
            "head_setup_commands": [], "head_start_ray_commands": [], "initialization_commands": [],
            "rsync_exclude": [], "rsync_filter": [], "setup_commands": [], "worker_setup_commands": [],
            "worker_start_ray_commands": [],
        }
        self.config_file = config_file = self.root / "autoscaling.json"
        config_file.write_text(json.dumps(config, indent=2))
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_API_SERVER_ADDRESS", "RAY_GCS_SERVER_PORT")}
        self.env |= {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_USAGE_STATS_ENABLED": "0",
                     "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        ports = {"--port": self.gcs_port, "--dashboard-port": self.dashboard_port,
                 "--ray-client-server-port": free_port(), "--dashboard-agent-listen-port": free_port(),
                 "--dashboard-agent-grpc-port": free_port(), "--runtime-env-agent-port": free_port(),
                 "--metrics-export-port": free_port(), "--node-manager-port": free_port(),
                 "--object-manager-port": free_port()}
        cmd = [*RAY_CLI, "start", "--head", "--block", "--node-ip-address", self.ip, "--dashboard-host", self.ip,
               f"--autoscaling-config={config_file}", "--temp-dir", str(self.root / "ray"),
               "--num-cpus", str(self.head_cpus), "--num-gpus", "0",
               "--object-store-memory", str(self.object_store_bytes), "--disable-usage-stats",
               *[str(x) for kv in ports.items() for x in kv]]
        self._log = open(self.root / "ray_start.log", "w")
        began = time.monotonic()
        # Its own session: stop() ends exactly this cluster's processes, never another Ray's.
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.root,
                                     start_new_session=True)
        log = self.root / "ray_start.log"
        try:
            # `ray start --block` prints this once the head's raylet registered (the dashboard may
            # answer before that and the start still fail), then blocks.
            wait_for(lambda: self.proc.poll() is not None or ("Ray runtime started" in log.read_text(errors="replace")
                                                               and self._api_up()),
                     timeout_s, "the fake cluster's head and job API", every_s=0.25)
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited:\n{log.read_text(errors='replace')[-3000:]}")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = round(time.monotonic() - began, 1)
        return self

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://{self.ip}:{self.dashboard_port}"

    def client_env(self) -> dict[str, str]:
        """What a driver (``raylm train``) or ``ray job submit`` needs to reach this cluster."""
        return self.env | {"RAY_ADDRESS": self.address}

    def _api_up(self) -> bool:
        """The job API answers an authenticated request (plain HTTP: a `ray job list` process
        costs seconds of imports per probe on a loaded machine)."""
        import urllib.error
        import urllib.request

        token = Path(self.env["RAY_AUTH_TOKEN_PATH"]).read_text()
        request = urllib.request.Request(f"{self.dashboard}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's live nodes, read by a separate short-lived driver (tests keep their own Ray)."""
        code = ("import json, ray; ray.init(address='auto', logging_level='ERROR', log_to_driver=False); "
                "print(json.dumps([{'id': n['NodeID'], 'cpus': n['Resources'].get('CPU', 0)} "
                "for n in ray.nodes() if n['Alive']]))")
        out = subprocess.run([sys.executable, "-c", code], env=self.client_env(), capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])

    def worker_nodes(self) -> int:
        return len(self.nodes()) - 1

    def monitor_log(self) -> str:
        logs = sorted((self.root / "ray").glob("session_*/logs/monitor.*"))
        return "\n".join(p.read_text(errors="replace") for p in logs)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, to the session and every descendant; raises if any survives."""
        if self.proc is None:
            return
        sid = self.proc.pid
        # 2 s for SIGTERM: the cluster is thrown away, and with 8 s the module's teardown took 8.3 s in the
        # quiet suite (some of its processes wait out SIGTERM); SIGKILL then ends them (#27 budget).
        for sig, grace in ((signal.SIGTERM, 2), (signal.SIGKILL, 8)):
            pids = set(_in_session(sid)) | set(descendants(sid)) | {sid}
            for pid in filter(_alive, pids):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (self.proc.poll() is None or any(map(_alive, pids))):
                time.sleep(0.2)
        self.proc.wait(timeout=5)
        left = [p for p in _in_session(sid) if _alive(p)]
        self.proc = None
        self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)
        if left:
            raise RuntimeError(f"fake cluster processes survived: {left}")

    def __enter__(self) -> FakeCluster:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
