"""Signals to a driver subprocess at a moment the test chose, not one the scheduler chose."""

from __future__ import annotations

import signal
import subprocess


def freeze(proc: subprocess.Popen) -> None:
    """SIGSTOP: the driver makes no more progress (starts no trial, records no stage) from now on.
    Work it already handed to Ray actors goes on; the test then judges what the driver had done."""
    proc.send_signal(signal.SIGSTOP)


def signal_frozen(proc: subprocess.Popen, sig: int, timeout_s: float) -> int:
    """Deliver ``sig`` to a frozen driver and wait (``timeout_s``) for it to end; its return code.
    A catchable signal (SIGINT, SIGTERM) stays pending while the process is stopped and is the first
    thing it handles on SIGCONT, so the driver acts on it before it can start any more work; SIGKILL
    ends it stopped or not."""
    proc.send_signal(sig)
    if sig != signal.SIGKILL:
        proc.send_signal(signal.SIGCONT)
    return proc.wait(timeout=timeout_s)
