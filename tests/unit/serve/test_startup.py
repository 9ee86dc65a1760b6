"""A replica's start line (raylm/serve/startup.py): when its process started, read from /proc, and the
seconds each stage took, which benchmarks/serve_load.py's scale-up timeline reports."""

import os
import subprocess
import sys
import time

import pytest

from raylm.serve import startup
from raylm.serve.startup import StartupClock


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="Linux /proc")
def test_a_process_start_is_read_from_proc():
    before = time.time()
    # The module's file alone: importing raylm.serve would import Ray Serve first.
    code = (f"import runpy, time; time.sleep(0.5); started = runpy.run_path({startup.__file__!r})['process_started_at']();"
            " print(started, time.time())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    after = time.time()
    started, asked = map(float, done.stdout.split())
    # Clock ticks are 10 ms: the start is after the parent launched it and at least the sleep before the question.
    assert before - 0.05 <= started <= after
    assert asked - started >= 0.45


def test_the_line_names_each_stage_with_its_seconds(monkeypatch):
    monkeypatch.setattr(startup, "process_started_at", lambda: 100.0)
    monkeypatch.setattr(startup, "IMPORTED_AT", 101.5)
    times = iter([102.0, 102.25, 105.0])
    monkeypatch.setattr(startup.time, "time", lambda: next(times))
    clock = StartupClock()
    clock.mark("artifact metadata")
    clock.mark("preprocessing warm-up")
    assert clock.line() == ("replica start: process started 2.00 s before the constructor; module import from -0.50 s; "
                            "artifact metadata 0.25 s; preprocessing warm-up 2.75 s (constructor 3.00 s)")
