"""The memory, spill and read throughput of one ``benchmarks/ingest.py`` run over time, as a small figure.

    python benchmarks/ingest_plot.py TRACE.jsonl RESULT.json OUT.png

``TRACE.jsonl`` is what ``ingest.py --trace`` appended (a sample a second: summed RSS/PSS of every Ray
process, the bytes they have read, every 5th sample the object store's spilled bytes); ``RESULT.json``
the JSON line it printed (the epoch's start and length, the data's size). ``ingest.py --plot`` calls
:func:`plot_trace` itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def plot_trace(trace: Path, result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    begin, seconds = result["epoch_started"], result["epoch_seconds"]
    t = np.array([s["time"] - begin for s in samples]) / 60
    rss = np.array([s["rss"] for s in samples]) / 2**30
    read = np.array([s.get("read_bytes", 0) for s in samples], dtype=float)
    # read throughput over a 30-sample window (the per-second figure jumps with every block)
    window, seconds_at = 30, t * 60
    rate = (read[window:] - read[:-window]) / np.maximum(seconds_at[window:] - seconds_at[:-window], 1e-9)
    spill_t = [(s["time"] - begin) / 60 for s in samples if "spilled_bytes" in s]
    spill = [s["spilled_bytes"] / 2**30 for s in samples if "spilled_bytes" in s]
    at_10 = result["rss_total_mib_at_10pct"] / 1024

    fig, axes = plt.subplots(3, 1, figsize=(6.4, 5.6), dpi=72, sharex=True)
    axes[0].plot(t, rss, lw=1, color="tab:blue", label="summed RSS of all Ray processes")
    axes[0].axhline(1.2 * at_10, color="tab:red", lw=0.8, ls="--", label="1.2x its value at 10 % of the epoch")
    axes[0].set_ylabel("GiB")
    axes[0].set_ylim(0, max(rss.max(), 1.2 * at_10) * 1.15)
    axes[0].legend(loc="lower right", fontsize=7)
    axes[1].plot(spill_t, spill, lw=1, color="tab:orange", label="object store: spilled to disk (cumulative)")
    axes[1].set_ylabel("GiB")
    axes[1].set_ylim(0, max(max(spill, default=0), 0.05 * result["data_bytes"] / 2**30) * 1.2)
    axes[1].axhline(0.05 * result["data_bytes"] / 2**30, color="tab:red", lw=0.8, ls="--", label="5 % of the data")
    axes[1].legend(loc="upper left", fontsize=7)
    axes[2].plot(t[window:], rate / 1e6, lw=1, color="tab:green", label=f"bytes read by Ray's processes ({window} s mean)")
    axes[2].set_ylabel("MB/s")
    axes[2].set_ylim(0, max(rate.max(initial=0) / 1e6, 1) * 1.15)
    axes[2].ticklabel_format(axis="y", useOffset=False, style="plain")
    axes[2].legend(loc="upper left", fontsize=7)
    axes[2].set_xlabel("minutes from the start of the epoch")
    for ax in axes:
        ax.axvspan(0, seconds / 60, color="0.92", zorder=0)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"one epoch over {result['data_bytes'] / 1e9:.1f} GB ({result['image'] or result['modality']}) with a "
                 f"{result['object_store_bytes'] / 2**20:.0f} MiB object store", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def partial_result(trace: Path, data_bytes: int, store_bytes: int) -> dict:
    """What :func:`plot_trace` reads of the result, from the trace alone: for a run that has not
    printed its result (still running, or stopped). The whole trace counts as the epoch."""
    samples = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    begin, end = samples[0]["time"], samples[-1]["time"]
    tenth = min(samples, key=lambda s: abs(s["time"] - (begin + 0.1 * (end - begin))))
    return {"epoch_started": begin, "epoch_seconds": end - begin, "data_bytes": data_bytes, "image": None,
            "modality": "partial run", "object_store_bytes": store_bytes, "rss_total_mib_at_10pct": tenth["rss"] / 2**20}


if __name__ == "__main__":
    # TRACE RESULT OUT, or TRACE --partial DATA_BYTES STORE_BYTES OUT
    if {"-h", "--help"} & set(sys.argv[1:]) or len(sys.argv) not in (4, 6):
        print(__doc__.strip() + "\n    python benchmarks/ingest_plot.py TRACE.jsonl --partial DATA_BYTES STORE_BYTES OUT.png")
        sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:]) else 2)
    if sys.argv[2] == "--partial":
        trace, data_bytes, store_bytes, out = sys.argv[1], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        plot_trace(Path(trace), partial_result(Path(trace), data_bytes, store_bytes), Path(out))
    else:
        trace, result, out = sys.argv[1:4]
        plot_trace(Path(trace), json.loads(Path(result).read_text().strip().splitlines()[-1]), Path(out))
