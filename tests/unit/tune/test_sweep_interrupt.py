"""How a sweep knows Tune's fit ended on Ctrl-C (raylm/tune/sweep.py ``_tune_ctrl_c``), against Tune's
own signal handling (``ray.tune.tune._setup_signal_catching``, what ``Tuner.fit`` installs), no cluster.
Tune returns from a Ctrl-C as if the sweep were done; the sweep must not write it up as finished."""

from __future__ import annotations

import os
import signal
import time


def test_a_ctrl_c_that_tune_caught_is_seen_and_the_handler_is_put_back():
    from ray.tune.tune import _setup_signal_catching

    from raylm.tune.sweep import _tune_ctrl_c

    before = signal.getsignal(signal.SIGINT)
    with _tune_ctrl_c() as ctrl_c:
        interrupted = _setup_signal_catching()  # Tune's handler, as fit installs it
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 10
        while not interrupted.is_set():  # Python runs the handler between bytecodes of the main thread
            assert time.monotonic() < deadline, "Tune's handler never ran"
            time.sleep(0.01)
    assert ctrl_c["seen"] is True
    assert signal.getsignal(signal.SIGINT) is before


def test_a_fit_that_ended_by_itself_is_not_an_interrupt_and_tunes_handler_is_removed():
    from ray.tune.tune import _setup_signal_catching

    from raylm.tune.sweep import _tune_ctrl_c

    before, usr1 = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)
    with _tune_ctrl_c() as ctrl_c:
        interrupted = _setup_signal_catching()
    assert ctrl_c["seen"] is False and not interrupted.is_set()
    # Tune leaves its handler installed (SIGINT and SIGUSR1); the sweep removes it.
    assert signal.getsignal(signal.SIGINT) is before and signal.getsignal(signal.SIGUSR1) is usr1
