"""The HAProxy in front of an embedded Ray's Serve (``serve.ingress: haproxy``), seen through its admin socket:
how many requests it has in flight, and closing its front door before the app's route is removed.

Why a drain needs it (traced: a real SIGTERM to ``raylm serve`` under load, 8 clients, every answer's status,
``server`` header and body kept): right after ``serve.delete`` the replica, told to stop, answers HAProxy's health
check ``DRAINING``, and HAProxy sends what arrives from then on to its backup server, Serve's Python proxy,
which has no route for the app: ``404 Path '/predict' not found`` with ``server: uvicorn``, from ~0.7 s after
the delete; once the controller has reloaded HAProxy without the app's backend, HAProxy's own
``default_backend`` answers the same 404 (no ``server`` header). A request a client sent just before the
signal but HAProxy read after the delete got one of those. So the route is kept until the requests in flight
are done: the door is closed first (``disable frontend``: new connections are refused, accepted ones finish),
then the app goes.
"""

from __future__ import annotations

import csv
import io
import os
import socket
from dataclasses import dataclass

FRONTEND = "http_frontend"  # Serve's HAProxy template (ray/serve/_private/haproxy_templates.py)
SOCKET_ENV = "RAY_SERVE_HAPROXY_SOCKET_PATH"


@dataclass(frozen=True)
class FrontDoor:
    socket_path: str

    @classmethod
    def of_this_process(cls) -> FrontDoor | None:
        """The HAProxy of the Ray this process started in HAProxy mode (its admin socket is where raylm put it),
        else None (Serve's proxy, or a cluster's HAProxy, which is not this process's to close)."""
        import ray

        path = os.environ.get(SOCKET_ENV)
        if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1" or not path:
            return None
        # Serve's HAProxy manager puts its files under a directory per node (ray/serve/_private/haproxy.py).
        head, name = os.path.split(path)
        path = os.path.join(head, ray.get_runtime_context().get_node_id(), name)
        return cls(path) if os.path.exists(path) else None

    def command(self, line: str, timeout_s: float = 5.0) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(self.socket_path)
            sock.sendall(f"{line}\n".encode())
            chunks = []
            while chunk := sock.recv(65536):  # HAProxy closes the connection after one answer
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def in_flight(self) -> int:
        """Requests queued for or inside a backend (every app's, HAProxy's own 404 backend included): a
        keep-alive connection idle between two requests holds no backend session, so it does not count."""
        return in_flight_of(self.command("show stat"))

    def close(self) -> None:
        """Stop accepting connections on the serving port and end the keep-alive ones after their current
        response. ``shutdown frontend`` stops the frontend (its listeners are closed: new connections are
        refused), and HAProxy answers on a stopped frontend's connections with ``Connection: close``, so a
        client that reuses its connection is told to reconnect, and its next connection is refused.
        ``disable frontend`` only paused the listeners: keep-alive clients went on sending on their open
        connections for as long as the drain allowed, then met the removed app (404) or a cut connection."""
        answer = self.command(f"shutdown frontend {FRONTEND}").strip()
        if answer and not any(word in answer.lower() for word in ("stopped", "terminated", "already", "shutdown")):
            raise RuntimeError(f"HAProxy refused 'shutdown frontend {FRONTEND}': {answer[:200]}")


def in_flight_of(show_stat: str) -> int:
    """Sum of qcur + scur over the BACKEND rows of HAProxy's ``show stat`` CSV."""
    text = show_stat.lstrip("# ")
    total = 0
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("svname") == "BACKEND":
            total += int(row.get("qcur") or 0) + int(row.get("scur") or 0)
    return total
