"""One ``raylm runs`` row (``raylm.report.collect.summarize``, ``raylm.report.runs.list_runs``)."""

from __future__ import annotations

from raylm.records.base import Record


class RunSummary(Record):
    name: str
    path: str
    kind: str  # pipeline | sweep | train, or the command of a run that failed before writing anything
    stage: str  # the last stage reached; train(<epoch>/<epochs>) for a training run
    best_accuracy: float | None = None
    served_accuracy: float | None = None  # a pipeline that evaluated: its served artifact's, measured from the file
    url: str | None = None
    serving: str = "-"  # up | down: whether the url's /healthz answers now (raylm.report.runs.serving_state)
    modified: float  # seconds since the epoch
    state: str = "-"  # finished | failed | interrupted | running (logs/status.json), - when unknown
    shadow: str | None = None  # live serving: the canary's share and the shadow's agreement (raylm/serve/shadow.py)
