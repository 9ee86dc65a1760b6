"""Serving until told to stop. SIGTERM (systemd, Kubernetes, ``kill``) or SIGINT (Ctrl-C) to a
process that serves (``raylm serve``, a pipeline that keeps serving) stops taking requests, lets
the ones in flight finish within ``serve.graceful_shutdown_s``, removes the app, shuts down the Ray
this process started, and says so in one line; the process then exits 0.

Why the handlers are installed after ``ray.init``: Ray's core worker installs a C++ failure signal
handler for SIGTERM in the driver when it connects (it prints ``*** SIGTERM received`` and stack
frames from ``logging.cc`` and kills the process). ``signal.signal`` afterwards puts Python's handler
back in its place at the operating-system level, so the signal reaches ``serve_until_stopped``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from raylm.config import ServeConfig
from raylm.serve.front_door import FrontDoor

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
POLL_S = 0.2
# Behind HAProxy: the door stays open until no request has been in flight for QUIET_S (a request a client sent
# just before the signal may reach HAProxy a moment after it), at most KEEP_OPEN_MAX_S (or a quarter of the drain).
QUIET_S = 0.5
KEEP_OPEN_MAX_S = 2.0
FRONT_POLL_S = 0.1


@dataclass(frozen=True)
class Stopped:
    """How serving ended: the signal, the seconds from the signal to the app being gone, whether the app's
    drain finished within the limit, and whether this process's Ray was shut down."""

    signal_name: str
    drain_s: float
    drained: bool
    ray_shut_down: bool

    def line(self, app: str, limit_s: float, who: str = "raylm serve") -> str:
        drain = (f"in-flight requests finished and app {app!r} removed in {self.drain_s:.1f} s" if self.drained else
                 f"requests still in flight or app {app!r} not removed within serve.graceful_shutdown_s={limit_s:g}: "
                 "stopped anyway")
        tail = "; Ray shut down" if self.ray_shut_down else "; the cluster's Ray keeps running"
        return f"{who}: {self.signal_name}: stopped taking requests; {drain}{tail}"


class StopSignals:
    """SIGTERM and SIGINT caught from now on (install it right after ``ray.init``, before deploying, so a
    signal during start-up also ends in a drain); a second one while draining ends the process at once
    (exit 1). ``owns_ray``: this process started the Ray it deploys on; a signal during start-up then
    also watches that Ray's own processes (see :meth:`_watch_start_up`)."""

    def __init__(self, owns_ray: bool = False, say: Callable[[str], None] | None = None) -> None:
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.received: list[int] = []
        self._arrived = threading.Event()
        self._serving = threading.Event()
        self._wakeup = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        if owns_ray:
            self._watch_start_up_from_now()

    def _on_signal(self, signum: int, frame) -> None:
        if self.received:  # asked twice: the operator does not want to wait for the drain
            raise SystemExit(1)
        self.received.append(signum)
        self._arrived.set()

    def _watch_start_up_from_now(self) -> None:
        """A stop signal sent to the whole process group (a terminal's or systemd's) during the deploy also ends
        this process's GCS and raylet (they leave SIGINT blocked, not SIGTERM): the deploy's next call to them
        then waited ~60 s for a reconnect, exited 1 with a stack, and a second Ctrl-C left Serve's HAProxy on
        ``serve.port``. Python runs ``_on_signal`` only when the main thread is back in Python (10 s late, seen),
        but its C handler writes the signal's number to a wakeup fd at once: a thread reads it, and while the
        deploy runs watches those processes; once they are gone there is nothing to drain: HAProxy is ended, a
        line says so, and the process exits 1. ``serving()`` ends the watch."""
        import socket

        reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._wakeup = (reader, writer, signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False))
        threading.Thread(target=self._watch_start_up, args=(reader,), daemon=True, name="raylm-start-up-stop").start()

    def _watch_start_up(self, reader) -> None:
        import os

        signum = None
        while signum is None:  # the wakeup fd carries every signal Python handles: wait for a stop signal
            try:
                got = reader.recv(1)
            except OSError:  # closed by serving()
                return
            if not got or self._serving.is_set():
                return
            signum = got[0] if got[0] in STOP_SIGNALS else None
        while not self._serving.wait(STARTUP_POLL_S):
            if _ray_daemons_alive():
                continue
            from raylm.runtime import abandon_embedded_ray

            ended = abandon_embedded_ray()
            self._say(f"raylm serve: {signal.Signals(signum).name} during start-up ended this process's Ray too (its "
                      f"GCS and raylet); nothing was serving yet{f', HAProxy ended (pids {ended})' if ended else ''}; "
                      "exiting")
            os._exit(1)

    def serving(self) -> None:
        """The app is deployed: from now on a signal drains it (no start-up watch). In the main thread."""
        self._serving.set()
        if self._wakeup is not None:
            reader, writer, before = self._wakeup
            self._wakeup = None
            signal.set_wakeup_fd(before)
            import socket

            try:
                reader.shutdown(socket.SHUT_RDWR)  # wakes the watch's recv (a close alone may not)
            except OSError:
                pass
            writer.close()
            reader.close()

    def wait(self) -> int:
        self.serving()
        while not self._arrived.wait(3600):
            pass
        return self.received[0]


STARTUP_POLL_S = 0.5


def _ray_daemons_alive() -> bool:
    """Whether this process's children include a live GCS and raylet (the Ray it started)."""
    try:
        import psutil  # Ray's vendored copy, importable once ray is
    except ImportError:
        return True
    names = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                names.add(child.name())
        except psutil.Error:
            continue
    return {"gcs_server", "raylet"} <= names



def drain_and_stop(app: str, cfg: ServeConfig, *, owns_ray: bool, clock: Callable[[], float] = time.monotonic,
                   signum: int = signal.SIGTERM) -> Stopped:
    """Remove ``app`` (Serve stops routing to it, each replica finishes its ongoing requests within
    ``graceful_shutdown_timeout_s``), then, when this process started Ray, shut Ray down. Behind the HAProxy of
    the Ray this process started, new connections are refused and the requests in flight finish first."""
    import ray
    from ray import serve

    start = clock()
    door = FrontDoor.of_this_process() if owns_ray else None
    drained = _drain_through(door, start, cfg.graceful_shutdown_s, clock) if door is not None else None
    if drained is not None:
        # HAProxy (raylm/serve/front_door.py): its door is closed and nothing is in flight (or the drain's time is
        # up), so ending this Ray removes the app with it; serve.delete first would cost the replicas' draining
        # period for nothing, and after the limit its fallback proxy answered what still came with 404.
        ray.shutdown()
        return Stopped(signal.Signals(signum).name, clock() - start, drained, True)
    deadline = start + cfg.graceful_shutdown_s + 2.0  # the controller's own loop on top of the replicas' drain
    serve.delete(app, _blocking=False)
    drained = False
    while clock() < deadline:
        if app not in serve.status().applications:
            drained = True
            break
        time.sleep(POLL_S)
    drain_s = clock() - start
    if owns_ray:
        # No serve.shutdown(): the app is gone, and ending this Ray ends Serve's controller and proxies (and
        # HAProxy, a child of its manager actor) in ~2 s, where Serve's own shutdown waited 30 s for
        # HAProxy's manager ("Controller failed to shut down within 30.0s").
        ray.shutdown()
    return Stopped(signal.Signals(signum).name, drain_s, drained, owns_ray)


def _drain_through(door: FrontDoor, start: float, limit_s: float, clock: Callable[[], float]) -> bool | None:
    """Keep accepting until nothing has been in flight for QUIET_S (at most KEEP_OPEN_MAX_S), close the door,
    wait for the requests in flight to finish (within ``limit_s`` of ``start``). Whether they all did; None when
    HAProxy's admin socket does not answer (the caller then removes the app the plain way)."""

    def wait_quiet(until: float, quiet_s: float) -> bool:
        quiet_since = None
        while True:
            now = clock()
            if door.in_flight() == 0:
                quiet_since = now if quiet_since is None else quiet_since
                if now - quiet_since >= quiet_s:
                    return True
            else:
                quiet_since = None
            if now >= until:
                return False
            time.sleep(FRONT_POLL_S)

    try:
        wait_quiet(start + min(KEEP_OPEN_MAX_S, limit_s / 4), QUIET_S)
        door.close()
        return wait_quiet(start + limit_s, 0.0)
    except (OSError, RuntimeError) as err:
        log.warning("HAProxy's admin socket: %s; removing the app the plain way", err)
        return None


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def serving_address(cfg: ServeConfig) -> tuple[str, int]:
    """Where the running Serve's HTTP proxies listen. Serve takes its HTTP options when it starts: on a cluster
    whose Serve already runs, ``serve.port`` / ``serve.host`` are ignored (Serve logs a warning), and the URL
    printed from them pointed at a port nothing listened on. A wildcard bind is shown as the config's host,
    or localhost."""
    try:
        from ray.serve.context import _get_global_client  # the connected client's copy of the controller's options

        http = _get_global_client().http_config
        host, port = http.host, int(http.port)
    except Exception:  # no Serve client here (or Ray changed the private API): what the config asked for
        return cfg.host, cfg.port
    if host in WILDCARD_HOSTS:
        host = cfg.host if cfg.host not in WILDCARD_HOSTS else "127.0.0.1"
    return host, port


def serve_until_stopped(app: str, cfg: ServeConfig, *, owns_ray: bool, who: str = "raylm serve",
                        signals: StopSignals | None = None) -> str:
    """Serve until SIGTERM/SIGINT, then drain and stop; returns the one line that says how it ended."""
    signum = (signals or StopSignals()).wait()
    stopped = drain_and_stop(app, cfg, owns_ray=owns_ray, signum=signum)
    return stopped.line(app, cfg.graceful_shutdown_s, who)
