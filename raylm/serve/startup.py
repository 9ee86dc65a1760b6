"""Where a replica's start goes, stage by stage: one line in the replica's log per start, read by
``benchmarks/serve_load.py``'s scale-up timeline (docs/fast.md, autoscaling).

A new replica's time to serve is its worker process's start, the import of the deployment's module, the
constructor (artifact metadata, the tokenizer) and the model load; the line names each with its share."""

from __future__ import annotations

import os
import time

# When this module was first imported in this process: in a replica, while Serve unpickles the deployment
# (raylm.serve.app imports it before ray.serve and FastAPI), so the gap to the constructor is mostly imports.
IMPORTED_AT = time.time()


def process_started_at() -> float | None:
    """Wall-clock time this process started (Linux /proc, 10 ms ticks), None where that cannot be read."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks since boot
            up = float(uptime.read().split()[0])
        return time.time() - (up - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class StartupClock:
    """Marks taken through a replica's start; ``line()`` says each stage's seconds."""

    def __init__(self) -> None:
        self.started = process_started_at()
        # Read here, not passed in: the deployment class is pickled by value (@serve.ingress), and a module
        # global it named would arrive as the driver's number.
        self.module_imported_at = IMPORTED_AT
        self.marks: list[tuple[str, float]] = [("constructor entered", time.time())]

    def mark(self, stage: str) -> None:
        self.marks.append((stage, time.time()))

    def line(self) -> str:
        entered = self.marks[0][1]
        head = []
        if self.started is not None:
            head.append(f"process started {entered - self.started:.2f} s before the constructor")
        head.append(f"module import from {self.module_imported_at - entered:+.2f} s")
        stages = [f"{name} {at - before:.2f} s" for (_, before), (name, at) in zip(self.marks, self.marks[1:])]
        return "replica start: " + "; ".join(head + stages) + f" (constructor {self.marks[-1][1] - entered:.2f} s)"
