"""The end-to-end demo: one model per modality on the bundled offline data, then a metrics table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from raylm.config import load_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "jobs" / "configs"
DEMO_CONFIGS = ("image.yaml", "text.yaml", "audio.yaml")


def run_demo(storage_path: str = "~/raylm_runs", epochs: int | None = None, config_dir: Path = CONFIG_DIR,
             say: Callable[[str], None] = print) -> list[dict]:
    """Train the three demo runs one after another; ``say`` gets each run's line and the table. Each run has
    its status (``raylm runs`` shows it finished, failed or interrupted) like a ``raylm train`` run."""
    from raylm.report.runs import run_status
    from raylm.runtime import ensure_ray
    from raylm.train import fit

    overrides = [f"train.storage_path={storage_path}"] + ([f"train.epochs={epochs}"] if epochs else [])
    configs = [load_config(config_dir / name, overrides) for name in DEMO_CONFIGS]  # all validated first
    ensure_ray()
    rows = []
    for cfg in configs:
        say(f"raylm demo: {cfg.task.modality} {cfg.model.name} on {cfg.data.name or cfg.data.path}, "
            f"{cfg.train.epochs} epochs  {cfg.run_location}")
        with run_status(cfg.run_dir, "train"):
            outcome = fit(cfg)
        rows.append({
            "modality": cfg.task.modality, "model": cfg.model.name, "dataset": cfg.data.name or cfg.data.path,
            "epochs": outcome.metrics["epoch"], "train_loss": outcome.metrics["train_loss"],
            "val_accuracy": outcome.metrics["val_accuracy"], "chance": 1 / len(outcome.labels),
            "checkpoint": str(outcome.checkpoint),
        })
    say(format_table(rows))
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'modality':<9}{'model':<14}{'dataset':<15}{'epochs':>7}{'train_loss':>12}{'val_acc':>9}{'chance':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['modality']:<9}{r['model']:<14}{str(r['dataset']):<15}{r['epochs']:>7}"
                     f"{r['train_loss']:>12.4f}{r['val_accuracy']:>9.3f}{r['chance']:>8.3f}")
    lines += [f"  {r['modality']} checkpoint: {r['checkpoint']}" for r in rows]
    return "\n".join(lines)
