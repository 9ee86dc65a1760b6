"""A floor under the time of one step of Ray Data's scheduling loop.

Ray Data's streaming executor (2.60) runs its scheduling loop on a thread: each step blocks in
``ray.wait`` on the running tasks (at most 0.1 s), then recounts every operator's resource usage and
budget, the backpressure, the autoscaler and the Prometheus gauges. When no task is running, which
is the steady state of a bounded stream whose producer is ahead of its trainer (the budget full, the
read tasks held back), a step has nothing to wait on and the loop spins: on a one-worker streamed
epoch it was the largest CPU cost beside the trainer (issue 31: py-spy of the executor thread,
90 % of its samples in that bookkeeping, not in ``ray.wait``). :class:`PacedSchedulingLoop`, one of
Ray Data's execution callbacks (``DataContext.custom_execution_callback_classes``), sleeps out the
rest of :data:`MIN_STEP_S` after a step that returned sooner; a step that waited on a task is not
delayed. Blocks are 8 MiB, hundreds of rows (a fraction of a second of training each), so a
few milliseconds more before the next dispatch are not seen by the trainer.
"""

from __future__ import annotations

import time

from ray.data._internal.execution.execution_callback import ExecutionCallback

MIN_STEP_S = 0.025  # at most 40 scheduling steps a second while nothing runs (the loop spun thousands)


class PacedSchedulingLoop(ExecutionCallback):
    """Sleeps out the rest of :data:`MIN_STEP_S` after each scheduling step that took less (one per execution)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def on_execution_step(self, executor) -> None:  # noqa: ARG002 - Ray Data's callback signature
        now = time.perf_counter()
        rest = MIN_STEP_S - (now - self._last)
        if rest > 0:
            time.sleep(rest)
            now = time.perf_counter()
        self._last = now
