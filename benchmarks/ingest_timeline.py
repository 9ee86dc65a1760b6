"""Where the streamed epoch's first-batch wait goes: Ray's task events around the epoch's start.

``pipeline_start(begin)`` (called by ingest.py while its Ray is still up) lists every task and actor of
the run with Ray's state API and returns, in seconds from the epoch's start (``begin``, wall clock; the
trainer asks for its first batch right after it):

- each Ray Data actor (the split coordinator) and the trainer: created, its process running;
- the first tasks of each kind (read+decode, the others): created, handed to a worker, running, done;
- per task: ``queued_s`` (created -> a worker leased: waiting for a CPU or a new worker process),
  ``start_s`` (leased -> running: argument transfer and the function's imports) and ``run_s``.

Task events reach the GCS about once a second, so the times are good to ~0.1 s (they come from the
raylet and workers, not from a 1 s flush). Negative times: before the epoch's start.
"""

from __future__ import annotations

from typing import Any


def _state_times(task: Any) -> dict[str, float]:
    """The first time (s, wall clock) the task entered each state."""
    times: dict[str, float] = {}
    for event in task.events or []:
        times.setdefault(str(event.get("state")), event.get("created_ms", 0) / 1000)
    return times


def pipeline_start(begin: float, *, first: int = 4) -> dict[str, Any]:
    import ray
    from ray.util.state import list_tasks

    # This run's GCS: other Ray instances on a shared machine make "auto" ambiguous.
    address = ray.get_runtime_context().gcs_address
    tasks = list_tasks(address=address, detail=True, limit=10000, raise_on_missing_output=False)
    rows: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        name = task.name or task.func_or_class_name
        states = _state_times(task)
        created = task.creation_time_ms / 1000 if task.creation_time_ms else states.get("PENDING_ARGS_AVAIL")
        leased = states.get("SUBMITTED_TO_WORKER")
        running = task.start_time_ms / 1000 if task.start_time_ms else states.get("RUNNING")
        done = task.end_time_ms / 1000 if task.end_time_ms else None
        if created is None:
            continue

        def rel(t: float | None) -> float | None:
            return round(t - begin, 2) if t is not None else None

        rows.setdefault(name, []).append({
            "created": rel(created), "leased": rel(leased), "running": rel(running), "done": rel(done),
            "queued_s": round(leased - created, 2) if leased else None,
            "start_s": round(running - leased, 2) if leased and running else None,
            "run_s": round(done - running, 2) if done and running else None,
            "pid": task.worker_pid, "type": str(task.type),
        })
    summary = {}
    for name, entries in rows.items():
        entries.sort(key=lambda e: e["created"])
        summary[name] = {"count": len(entries), "first": entries[:first]}
    # Names that run around the epoch's start first, the rest (setup, validation) after.
    return dict(sorted(summary.items(), key=lambda kv: abs(kv[1]["first"][0]["created"] or 0)))


if __name__ == "__main__":
    import sys

    print(__doc__.strip() + "\n\n(a module: benchmarks/ingest.py --timeline calls it; nothing to run on its own)")
    sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)
