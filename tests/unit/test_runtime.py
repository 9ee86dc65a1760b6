"""raylm/runtime.py pieces that need no Ray running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_an_embedded_rays_haproxy_directory_is_removed_when_its_process_exits():
    """Each embedded Ray in HAProxy mode gets its own directory for HAProxy's config, sockets and server
    state; it goes when the process that owns that Ray exits (it used to stay under /tmp, one per run)."""
    code = ("import json, os\n"
            "from raylm.runtime import _haproxy_session_env\n"
            "env = _haproxy_session_env()\n"
            "base = env['RAY_SERVE_HAPROXY_SERVER_STATE_BASE']\n"
            "open(env['RAY_SERVE_HAPROXY_CONFIG_FILE_LOC'], 'w').write('global\\n')  # as Serve writes it\n"
            "print(json.dumps({'base': base, 'there': os.path.isfile(env['RAY_SERVE_HAPROXY_CONFIG_FILE_LOC'])}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120, check=True).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["there"] and Path(seen["base"]).name.startswith("raylm-haproxy-")
    assert not Path(seen["base"]).exists()


def test_a_busy_serve_port_is_a_config_error_naming_the_field():
    """`raylm serve` / the pipeline check the port before starting Ray (was a 25-line HAProxy stack after it)."""
    import socket

    from raylm.config import ConfigError
    from raylm.runtime import check_port_free

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"serve.port={port}: 127.0.0.1:{port} is already in use"):
            check_port_free("127.0.0.1", port, "serve.port")
    check_port_free("127.0.0.1", port, "serve.port")  # closed: free again


def test_only_an_embedded_ray_to_start_checks_ports(monkeypatch):
    from raylm.runtime import will_start_ray

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a cluster's Serve may hold serve.port itself
    assert will_start_ray() is False


def test_a_haproxy_left_after_ray_shut_down_is_ended_and_only_ours(tmp_path):
    """A reloaded HAProxy whose parent had gone outlived `raylm serve` and kept its port (stop 42): at exit the
    processes naming this Ray's own HAProxy directory are ended, and only those."""
    import ray  # noqa: F401 - as in a process whose Ray started HAProxy

    import raylm.runtime as runtime

    base = tmp_path / "raylm-haproxy-test"
    base.mkdir()
    other = tmp_path / "raylm-haproxy-other"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    ours = subprocess.Popen([*sleeper, "-f", str(base / "haproxy.cfg")])
    theirs = subprocess.Popen([*sleeper, "-f", str(other / "haproxy.cfg")])
    try:
        # The step of remove_session_files() after its ray.shutdown(), which this test must not call: in the
        # suite's process it would end the session's Ray (the SIGTERM test covers the whole exit path).
        assert runtime._stop_leftover_haproxy(str(base)) == [ours.pid]
        assert ours.wait(timeout=30) is not None
        assert theirs.poll() is None  # another Ray's HAProxy is not touched
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait(timeout=30)


def test_a_verbs_log_directories_beyond_the_newest_ten_are_removed_unless_recent(tmp_path, monkeypatch):
    """`raylm data check` and `raylm serve` make a log directory per call in the temp dir; the verb's old
    ones beyond the newest KEEP_VERB_LOGS go, a recent one stays whatever the count, other verbs' stay."""
    import tempfile
    import time

    from raylm import runtime

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    now = time.time()
    for i in range(14):  # 14 old data checks, a day + i minutes old (the oldest last)
        d = tmp_path / f"raylm-data-check-old{i:02d}"
        (d).mkdir()
        (d / "ray.log").write_text("x")
        os.utime(d, (now - 86400 - 60 * i, now - 86400 - 60 * i))
    recent = tmp_path / "raylm-data-check-recent"
    recent.mkdir()
    os.utime(recent, (now - 60, now - 60))  # 11th newest before the call: kept, a command may still run
    other = tmp_path / "raylm-serve-old"
    other.mkdir()
    os.utime(other, (now - 86400 * 30, now - 86400 * 30))

    made = runtime.verb_log_dir("data-check")

    left = sorted(p.name for p in tmp_path.glob("raylm-data-check-*"))
    assert made.is_dir() and made.name in left
    assert recent.name in left and other.exists()
    olds = [n for n in left if n.startswith("raylm-data-check-old")]
    # the newest ten besides the new one are `recent` and old00..old08; old09.. go
    assert olds == [f"raylm-data-check-old{i:02d}" for i in range(9)]
