"""The report's figures, each returned as a ``data:image/png;base64`` URI (the page embeds them)."""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _uri(fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return png_uri(buffer.getvalue())


def curves(histories: dict[str, list[dict[str, Any]]], statuses: dict[str, str],
           retrain: list[dict[str, Any]] | None) -> str | None:
    """Validation accuracy and training loss per epoch: a thin line per trial, the retrain bold."""
    if not histories and not retrain:
        return None
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for trial_id, history in sorted(histories.items()):
        epochs = [h.get("epoch") for h in history]
        label = f"{trial_id} ({statuses.get(trial_id, '?')})"
        style = "--" if statuses.get(trial_id) == "stopped" else "-"
        acc_ax.plot(epochs, [h.get("val_accuracy") for h in history], style, marker=".", alpha=0.7, label=label)
        loss_ax.plot(epochs, [h.get("train_loss") for h in history], style, marker=".", alpha=0.7)
    # A training run alone is "the run", not a retrain, and has no trials ASHA stopped.
    name = "retrain" if histories else "run"
    if retrain:
        epochs = [h.get("epoch") for h in retrain]
        acc_ax.plot(epochs, [h.get("val_accuracy") for h in retrain], "k-", marker="o", linewidth=2.5, label=name)
        loss_ax.plot(epochs, [h.get("train_loss") for h in retrain], "k-", marker="o", linewidth=2.5, label=f"{name} train")
        loss_ax.plot(epochs, [h.get("val_loss") for h in retrain], "k:", marker="o", linewidth=2, label=f"{name} val")
        loss_ax.legend(fontsize=7)
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy")
    stopped = any(status == "stopped" for status in statuses.values())
    loss_ax.set(xlabel="epoch", ylabel="loss", title="training loss" + (" (dashed: stopped by ASHA)" if stopped else ""))
    acc_ax.legend(fontsize=7, ncol=2)
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _uri(fig)


def schedule(document: dict[str, Any]) -> str | None:
    """A learned schedule (schedule.json): one panel per hyperparameter, its value over the epochs,
    a red line at each exploit (where the lineage passed to another trial)."""
    per_epoch, keys = document.get("per_epoch") or [], document.get("keys") or []
    if not per_epoch or not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3), squeeze=False)
    epochs = [e["epoch"] for e in per_epoch]
    for ax, key in zip(axes[0], keys):
        values = [e["values"].get(key) for e in per_epoch]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ax.step(epochs, values if numeric else [str(v) for v in values], where="mid", marker="o")
        for exploit in document.get("exploits") or []:
            ax.axvline(exploit["epoch"] - 0.5, color="red", alpha=0.6, linestyle="--")
        if key.endswith(".lr") and numeric and min(values) > 0:
            ax.set_yscale("log")
        ax.set(xlabel="epoch", title=key)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _uri(fig)


def pareto(trials: list[dict[str, Any]], front_ids: set[str], chosen: str | None,
           dense: dict[str, Any] | None, served: dict[str, Any] | None) -> str | None:
    """Accuracy vs p50 latency of the completed trials (area: size), the front, the chosen trial,
    the dense reference and the served artifact as measured by the pipeline."""
    done = [r for r in trials if r.get("status") == "completed" and r.get("latency_ms") is not None]
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    biggest = max(max(r.get("size_mb") or 0 for r in done), 1e-9)
    ax.scatter([r["latency_ms"] for r in done], [r["accuracy"] for r in done],
               s=[40 + 400 * (r.get("size_mb") or 0) / biggest for r in done], alpha=0.45, label="trial (area: size)")
    front = sorted((r["latency_ms"], r["accuracy"]) for r in done if r.get("trial_id") in front_ids)
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="C3", label="Pareto front")
    for r in done:
        ax.annotate(str(r.get("trial_id")), (r["latency_ms"], r["accuracy"]), fontsize=7, alpha=0.7)
    pick = next((r for r in done if r.get("trial_id") == chosen), None)
    if pick:
        ax.scatter([pick["latency_ms"]], [pick["accuracy"]], marker="*", s=320, color="gold", edgecolor="k",
                   zorder=4, label=f"chosen ({chosen})")
    if dense and dense.get("latency_ms") is not None and dense.get("accuracy") is not None:
        ax.scatter([dense["latency_ms"]], [dense["accuracy"]], marker="X", s=160, color="k", zorder=4,
                   label=dense.get("label", "dense reference"))
    if served and served.get("latency_ms") is not None and served.get("accuracy") is not None:
        ax.scatter([served["latency_ms"]], [served["accuracy"]], marker="D", s=90, color="C2", edgecolor="k",
                   zorder=4, label="served artifact (evaluated)")
    ax.set(xlabel=f"p50 latency (ms, batch {done[0].get('latency_batch_size') or '?'})", ylabel="validation accuracy")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _uri(fig)


def confusion(matrix: list[list[int]], labels: list[str]) -> str | None:
    if not matrix or not labels or len(matrix) != len(labels):
        return None
    import numpy as np

    counts = np.asarray(matrix)
    side = max(3.5, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")
    for (i, j), n in np.ndenumerate(counts):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                    color="white" if n > counts.max() / 2 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _uri(fig)
