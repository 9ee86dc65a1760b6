"""Live agreement between the tier that answered and a shadow tier, and the canary's share: what a replica
records, and what ``raylm runs`` reads back.

Each replica counts into Prometheus metrics (``ray.serve.metrics``: Ray's metrics export adds the
application, deployment and replica tags) and keeps a summary it writes atomically to
``<summary_dir>/shadow-<replica>.json`` at most every ``FLUSH_S`` seconds. The files of every replica that
ever served (a restarted one writes a new file) are summed by ``read_shadow_summary``: counts add up,
latency percentiles are over the last ``KEEP_LATENCIES`` copies of each replica.

Agreement is per row (a request may carry several texts, images or clips): the shadow's top-1 label equals
the answer's. Rows of copies that were skipped (``serve.shadow_max_pending`` reached) or failed are not
compared; they are counted apart.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from raylm.atomic import atomic_write_text

FLUSH_S = 0.5
KEEP_LATENCIES = 2000
LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
SUMMARY_GLOB = "shadow-*.json"


def summary_dir_for(configured: str | None, default_tier_path: str) -> Path | None:
    """``serve.shadow_summary_dir``, else ``<run>/serve`` when the default tier is a local ``<run>/compress/<variant>``."""
    from raylm.storage import is_uri

    if configured:
        return Path(configured).expanduser().resolve()
    if is_uri(default_tier_path):
        return None
    path = Path(default_tier_path)
    return path.parent.parent / "serve" if path.parent.name == "compress" else None


def _pair(answer: str, shadow: str) -> str:
    return f"{answer}>{shadow}"


class ShadowRecorder:
    """One replica's counts and latencies (metrics + summary file); ``admit``/``release`` bound the copies in flight."""

    def __init__(self, summary_dir: str | None, max_pending: int) -> None:
        from ray import serve
        from ray.serve import metrics

        context = serve.get_replica_context()
        self._replica, self._app = context.replica_tag, context.app_name
        self._file = Path(summary_dir) / f"shadow-{self._replica}.json" if summary_dir else None
        self._max_pending = max_pending
        self._pending = 0
        self._pairs: dict[str, dict[str, Any]] = {}
        self._routed: dict[str, int] = {}
        self._last_flush = 0.0
        self._flush_task: asyncio.Task | None = None
        pair_tags = ("tier", "shadow")
        self._m_rows = metrics.Counter("raylm_shadow_rows", "rows answered and compared with the shadow tier",
                                       tag_keys=pair_tags)
        self._m_agreed = metrics.Counter("raylm_shadow_agreed_rows", "rows whose shadow top-1 equals the answer's",
                                         tag_keys=pair_tags)
        self._m_skipped = metrics.Counter("raylm_shadow_skipped_requests", "shadow copies not run: "
                                          "serve.shadow_max_pending reached, or the shadow failed", tag_keys=pair_tags)
        self._m_latency = metrics.Histogram("raylm_tier_latency_ms", "ms inside the replica per request, by tier and "
                                            "role (answer or shadow)", boundaries=LATENCY_BOUNDARIES_MS,
                                            tag_keys=("tier", "role"))
        self._m_routed = metrics.Counter("raylm_routed_requests", "requests naming no tier, by the tier that "
                                         "answered (default or canary)", tag_keys=("tier",))

    # -- the canary's share

    def routed(self, tier: str, answer_ms: float) -> None:
        self._routed[tier] = self._routed.get(tier, 0) + 1
        self._m_routed.inc(tags={"tier": tier})
        self._m_latency.observe(answer_ms, tags={"tier": tier, "role": "answer"})
        self._flush_soon()

    # -- shadow copies

    def admit(self) -> bool:
        if self._pending >= self._max_pending:
            return False
        self._pending += 1
        return True

    def release(self) -> None:
        self._pending -= 1

    def _stats(self, answer: str, shadow: str) -> dict[str, Any]:
        return self._pairs.setdefault(_pair(answer, shadow), {
            "answer": answer, "shadow": shadow, "requests": 0, "rows": 0, "agreed": 0, "skipped": 0, "failed": 0,
            "answer_ms": [], "shadow_ms": []})

    def skipped(self, answer: str, shadow: str, *, failed: bool = False) -> None:
        self._stats(answer, shadow)["failed" if failed else "skipped"] += 1
        self._m_skipped.inc(tags={"tier": answer, "shadow": shadow})
        self._flush_soon()

    def record(self, answer: str, shadow: str, answer_top1: np.ndarray, shadow_top1: np.ndarray,
               answer_ms: float, shadow_ms: float) -> None:
        stats = self._stats(answer, shadow)
        agreed = int((answer_top1 == shadow_top1).sum())
        stats["requests"] += 1
        stats["rows"] += len(answer_top1)
        stats["agreed"] += agreed
        for key, ms in (("answer_ms", answer_ms), ("shadow_ms", shadow_ms)):
            stats[key].append(round(ms, 3))
            del stats[key][:-KEEP_LATENCIES]
        tags = {"tier": answer, "shadow": shadow}
        self._m_rows.inc(len(answer_top1), tags=tags)
        if agreed:
            self._m_agreed.inc(agreed, tags=tags)
        self._m_latency.observe(shadow_ms, tags={"tier": shadow, "role": "shadow"})
        self._flush_soon()

    # -- the summary file

    def summary(self) -> dict[str, Any]:
        return {"app": self._app, "replica": self._replica, "updated": time.time(), "routed": dict(self._routed),
                "pairs": self._pairs}

    def _flush_soon(self) -> None:
        """Write now if the last write is FLUSH_S old, else once more FLUSH_S after it (one timer at a time)."""
        if self._file is None or (self._flush_task is not None and not self._flush_task.done()):
            return
        wait = self._last_flush + FLUSH_S - time.monotonic()
        self._flush_task = asyncio.get_running_loop().create_task(self._flush_after(max(wait, 0.0)))

    async def _flush_after(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._last_flush = time.monotonic()
        text = json.dumps(self.summary())
        try:
            await asyncio.to_thread(self._write, text)
        except OSError as err:  # a full or read-only disk must not fail the replica: the metrics still count
            import logging

            logging.getLogger("ray.serve").warning("shadow summary not written to %s: %s", self._file, err)

    def _write(self, text: str) -> None:
        assert self._file is not None
        self._file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self._file, text)


def read_shadow_summary(summary_dir: Path) -> dict[str, Any] | None:
    """Every replica's summary under ``summary_dir`` summed: {"routed": {tier: n}, "pairs": {"a>b": {...,
    "agreement", "answer_p50_ms", "shadow_p50_ms"}}}, or None when no replica wrote one."""
    files = sorted(Path(summary_dir).glob(SUMMARY_GLOB)) if Path(summary_dir).is_dir() else []
    routed: dict[str, int] = {}
    pairs: dict[str, dict[str, Any]] = {}
    for path in files:
        try:
            one = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for tier, n in (one.get("routed") or {}).items():
            routed[tier] = routed.get(tier, 0) + int(n)
        for key, stats in (one.get("pairs") or {}).items():
            total = pairs.setdefault(key, {"answer": stats["answer"], "shadow": stats["shadow"], "requests": 0,
                                           "rows": 0, "agreed": 0, "skipped": 0, "failed": 0, "answer_ms": [],
                                           "shadow_ms": []})
            for field in ("requests", "rows", "agreed", "skipped", "failed"):
                total[field] += int(stats.get(field, 0))
            total["answer_ms"] += stats.get("answer_ms", [])
            total["shadow_ms"] += stats.get("shadow_ms", [])
    if not files or not (routed or pairs):
        return None
    for total in pairs.values():
        total["agreement"] = total["agreed"] / total["rows"] if total["rows"] else None
        for key in ("answer_ms", "shadow_ms"):
            values = total.pop(key)
            total[key.replace("_ms", "_p50_ms")] = float(np.median(values)) if values else None
    return {"routed": routed, "pairs": pairs}


def shadow_line(summary: dict[str, Any] | None) -> str:
    """The ``raylm runs`` cell: the canary's share and each pair's agreement, e.g.
    ``canary int8 10.2% of 2000; fp32>int8 97.5% of 2000 rows``."""
    if not summary:
        return "-"
    parts = []
    routed = summary.get("routed") or {}
    total = sum(routed.values())
    if len(routed) > 1 and total:
        parts.append(" ".join(f"{tier} {100 * n / total:.1f}%" for tier, n in sorted(routed.items())) + f" of {total}")
    for key, stats in sorted(summary.get("pairs", {}).items()):
        if stats["agreement"] is not None:
            parts.append(f"{key} agree {100 * stats['agreement']:.1f}% of {stats['rows']} rows")
    return "; ".join(parts) or "-"
