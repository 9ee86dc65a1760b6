"""A free port for the servers that cannot bind port 0 and report what they got.

Servers that can do so are started that way (moto: ``-p 0``, its log names the port; tests/helpers/
s3_server.py). Ray Serve's HTTP proxy (``serve.start(http_options=...)``, ``serve.port``) and a
``ray start --head``'s GCS and dashboard take a fixed port, so they get one from here: bound by the
kernel to port 0, then released for the server to bind. Every such place calls this one function,
so a future Ray that reports its bound ports replaces it here.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
