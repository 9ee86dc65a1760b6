"""`ray job submit` of jobs/train.py to a real `ray start --head` cluster with token authentication.

The cluster is a second Ray instance on loopback (own ports, own temp dir, its own token file) so
it neither sees nor disturbs the session's `ray_local` Ray. It is stopped by terminating the
`ray start --block` process tree it owns: `ray stop` would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from raylm.run_files import newest_checkpoint_meta
from tests.helpers.configs import tiny_config_in
from tests.helpers.oracles import assert_beats_chance
from tests.helpers.fake_cluster import RAY_CLI, _alive, descendants as _descendants, free_port as _free_port

pytestmark = pytest.mark.integration

from tests.helpers.paths import REPO
def _stop_tree(proc: subprocess.Popen) -> None:
    """SIGTERM to every process of this cluster at once (as `ray stop` does machine-wide), then SIGKILL."""
    pids = [proc.pid, *_descendants(proc.pid)]
    # 2 s for SIGTERM: the cluster is thrown away (with 5 s its teardown took 5.3 s in the suite: #27 budget).
    for sig, grace in ((signal.SIGTERM, 2), (signal.SIGKILL, 5)):
        for pid in filter(_alive, pids):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:  # exited in between
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (proc.poll() is None or any(map(_alive, pids))):
            time.sleep(0.2)


@pytest.fixture(scope="module")
def token_cluster():
    """A head-only Ray cluster on 127.0.0.1 with RAY_AUTH_MODE=token: (dashboard URL, client env)."""
    root = Path(tempfile.mkdtemp(prefix="rlj", dir="/tmp"))  # short: Ray's socket paths have a length limit
    token_file = root / "auth_token"
    token_file.write_text(subprocess.run(
        [sys.executable, "-c", "import secrets; print(secrets.token_hex(32), end='')"],
        capture_output=True, text=True, check=True).stdout)
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_API_SERVER_ADDRESS")}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file), "RAY_USAGE_STATS_ENABLED": "0"}
    dashboard_port = _free_port()
    ports = {"--port": _free_port(), "--dashboard-port": dashboard_port, "--ray-client-server-port": _free_port(),
             "--dashboard-agent-listen-port": _free_port(), "--dashboard-agent-grpc-port": _free_port(),
             "--runtime-env-agent-port": _free_port(), "--metrics-export-port": _free_port(),
             "--node-manager-port": _free_port(), "--object-manager-port": _free_port()}
    cmd = [*RAY_CLI, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
           "--temp-dir", str(root / "ray"), "--num-cpus", "2", "--num-gpus", "0", "--disable-usage-stats",
           *[str(x) for kv in ports.items() for x in kv]]
    log = open(root / "ray_start.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # the job API answers once the dashboard is up
            probe = subprocess.run([*RAY_CLI, "job", "list", "--address", address], env=env,
                                   capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start did not come up:\n{(root / 'ray_start.log').read_text()[-3000:]}"
                                   f"\n{probe.stderr[-2000:]}")
            time.sleep(0.25)
        yield address, env
    finally:
        _stop_tree(proc)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _ray(env, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*RAY_CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _job_status(address, env, submission_id) -> str:
    """The job's status from the job REST API, authenticated the way every client is: a bearer token."""
    token = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text()
    request = urllib.request.Request(f"{address}/api/jobs/{submission_id}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["status"]


def _submit_args(address, submission_id, *entrypoint) -> list[str]:
    return [*RAY_CLI, "job", "submit", "--address", address, "--submission-id", submission_id,
            "--working-dir", str(REPO), "--runtime-env", str(REPO / "jobs" / "runtime_env.yaml"), "--", *entrypoint]


def _submit(address, env, submission_id, *entrypoint) -> subprocess.Popen:
    """``ray job submit`` (it waits for the job and prints its logs), started: ``.communicate()`` ends it."""
    return subprocess.Popen(_submit_args(address, submission_id, *entrypoint), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_job_api_refuses_requests_without_the_token(token_cluster):
    address, env = token_cluster
    no_token = _ray(env | {"RAY_AUTH_MODE": "disabled", "HOME": str(Path(env["RAY_AUTH_TOKEN_PATH"]).parent)},
                    "job", "list", "--address", address, timeout=60)
    assert no_token.returncode != 0 and "Unauthorized" in no_token.stderr + no_token.stdout
    wrong = _ray(env | {"RAY_AUTH_TOKEN": "0" * 64}, "job", "list", "--address", address, timeout=60)
    assert wrong.returncode != 0 and "Invalid authentication token" in wrong.stderr + wrong.stdout


def test_train_job_succeeds_and_a_bad_config_job_fails_naming_the_field(token_cluster, data_root, tmp_path):
    address, env = token_cluster
    # One epoch: the record's accuracy must clear the chance bar all the same (tests/helpers/oracles.py).
    cfg = tiny_config_in(tmp_path, data_root, "image", "train.epochs=1", "train.num_workers=1",
                         "train.cpus_per_worker=0.5", "train.name=submitted")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))

    # Both submitted at once (the bad one fails in seconds, before Ray; one after the other cost its
    # whole submission, #27 budget): each is judged on its own status and logs.
    ok = _submit(address, env, "raylm-train-ok", "python", "jobs/train.py", "--config", str(config))
    bad = _submit(address, env, "raylm-train-bad", "python", "jobs/train.py", "--config", str(config),
                  "train.num_workers=0")
    try:
        ok_out, ok_err = ok.communicate(timeout=300)
        bad.communicate(timeout=300)
    finally:
        for proc in (ok, bad):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert ok.returncode == 0, ok_out[-4000:] + ok_err[-4000:]
    assert _job_status(address, env, "raylm-train-ok") == "SUCCEEDED"
    # The run record the job's workers wrote where the config said: the newest checkpoint's raylm.json,
    # its accuracy on the validation split against chance (tests/helpers/oracles.py).
    record = newest_checkpoint_meta(cfg.run_dir / "train")
    assert record is not None and record["epoch"] == 1, record
    assert_beats_chance(record["metrics"]["val_accuracy"], record["metrics"]["val_samples"])
    logs = _ray(env, "job", "logs", "--address", address, "raylm-train-ok", timeout=60).stdout
    start = logs.index('{\n  "run_dir"')
    printed, length = json.JSONDecoder().raw_decode(logs[start:])  # the job's JSON outcome, as a user reads it
    assert printed["run_dir"] == str(cfg.run_dir) and printed["metrics"]["val_accuracy"] == record["metrics"]["val_accuracy"]
    # The answer is the log's end: jobs/ scripts stop their Ray before the streams come back (worker lines
    # forwarded late, "(SplitCoordinator pid=...) Starting execution...", followed the answer).
    assert not logs[start + length:].strip(), logs[start + length:][:2000]

    assert bad.returncode != 0
    assert _job_status(address, env, "raylm-train-bad") == "FAILED"
    logs = _ray(env, "job", "logs", "--address", address, "raylm-train-bad", timeout=60).stdout
    assert "train.num_workers" in logs


def test_driver_leaves_the_submitted_jobs_env_vars_to_the_job(monkeypatch):
    """ray.init refuses a driver runtime env that repeats a key of the job's own (ray job submit)."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    from raylm.runtime import _submitted_job_env_vars

    monkeypatch.delenv(RAY_JOB_CONFIG_JSON_ENV_VAR, raising=False)
    assert _submitted_job_env_vars() == {}
    job = {"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip", "env_vars": {"TF_USE_LEGACY_KERAS": "1"}}}
    monkeypatch.setenv(RAY_JOB_CONFIG_JSON_ENV_VAR, json.dumps(job))
    assert _submitted_job_env_vars() == {"TF_USE_LEGACY_KERAS": "1"}
