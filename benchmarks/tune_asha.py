"""ASHA vs FIFO on the image demo: the same sampled trials, early-stopped vs trained to the full budget.

    python benchmarks/tune_asha.py [--seeds 0 1 2] [--trials 8] [--epochs 8] [--reduction-factor 3] [--grace-period N]

One local Ray (2 CPUs); per seed, raylm's ``sweep`` over the image demo set (``digits``,
``seed_cnn``, the model and data of jobs/configs/image_tune.yaml) twice with random search and
the same ``tune.seed``, so both sweeps sample the same configs in the same order: once with ASHA
(early stopping on val_accuracy; rungs relative to the budget unless ``--grace-period``), once
with FIFO (every trial trains ``--epochs``). The space spans good and hopeless learning rates, so
ASHA has something to stop. Trials run ``--concurrency`` at a time (1 Train worker each), and
compression is cheap (no pruning, no quantization, a few latency runs), so the sweeps differ only
in the epochs ASHA skips. ASHA runs first: whatever the second sweep gains from warm caches goes
to the FIFO baseline. Besides wall times and best accuracies, the line says what a trial costs
apart from its epochs (``*_mean_*trial_s`` against ``*_epochs_trained``), how many trial actors
each sweep started (``*_actors``: Tune reuses one across finished and stopped trials) and what the
first trial, which starts the actor, took (``*_first_trial_s``). ``goal_met`` is the
issue's goal on the mean over seeds: ASHA's best within 1 point of FIFO's at <= 0.4x FIFO's wall
time. Prints one JSON line: per seed, then mean and spread (min, max) over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _config(args, scheduler: str, storage: str, seed: int):
    from raylm.config import merge, parse_overrides, validate_config

    tree = yaml.safe_load((ROOT / "jobs/configs/image_tune.yaml").read_text())
    tree.pop("tune"), tree.pop("compress")  # this benchmark's own space; compression kept cheap
    space = {"train.lr": {"loguniform": [args.lr_low, args.lr_high]},
             "augment.image.rotate_p": {"uniform": [0.0, 0.5]}}
    return validate_config(merge(tree, parse_overrides([
        f"data.samples_per_class={args.per_class}", f"train.epochs={args.epochs}", f"train.seed={seed}",
        "train.num_workers=1", "train.cpus_per_worker=0.5", "train.log_every_n_steps=100000",
        f"train.storage_path={storage}", f"train.name={scheduler}-seed{seed}",
        "compress.latency_runs=3", "compress.latency_warmup=1",
        f"tune.space={json.dumps(space)}", "tune.search=random", f"tune.scheduler={scheduler}",
        "tune.objectives=[accuracy]", f"tune.num_samples={args.trials}", f"tune.seed={seed}",
        f"tune.max_concurrent_trials={args.concurrency}", "tune.trial_cpus=0.25",
        f"tune.grace_period={'null' if args.grace_period is None else args.grace_period}",
        f"tune.reduction_factor={args.reduction_factor}", "tune.export=none",
    ])))


def _sweep(args, scheduler: str, storage: str, seed: int) -> dict:
    from raylm.tune import sweep

    cfg = _config(args, scheduler, storage, seed)
    start = time.perf_counter()
    result = sweep(cfg, verbose=False)
    wall = time.perf_counter() - start
    rows = result.rows
    statuses = [r["status"] for r in rows]
    # Tune logs each result's process id: distinct ones are the trial actors the sweep started
    # (with actor reuse, one per concurrent slot however many trials ASHA stops).
    pids = {json.loads(line)["pid"] for r in rows for line in (Path(r["trial_dir"]) / "result.json").read_text().splitlines()
            if line.strip()}
    first = min(rows, key=lambda r: r["trial_id"])  # pays the actor's start: process, imports, first epoch's warm-up
    return {
        "wall_s": wall,
        "best_accuracy": result.best["accuracy"] if result.best else None,
        "best_lr": result.best["params"]["train.lr"] if result.best else None,
        "completed": statuses.count("completed"), "stopped": statuses.count("stopped"),
        "errors": statuses.count("error"),
        "epochs_trained": sum(r["epochs"] or 0 for r in rows),
        "actors": len(pids), "first_trial_s": first["time_s"], "first_trial_epochs": first["epochs"],
        "trial_s": {status: [r["time_s"] for r in rows if r["status"] == status and r["time_s"] is not None]
                    for status in ("completed", "stopped")},
        "stopped_epochs": [r["epochs"] for r in rows if r["status"] == "stopped"],
        "params": sorted(tuple(round(v, 12) for v in r["params"].values()) for r in rows),
        "trials": sorted(({"lr": r["params"]["train.lr"], "status": r["status"], "epochs": r["epochs"],
                           "val_accuracy": r["val_accuracy"]} for r in rows), key=lambda t: t["lr"]),
    }


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _one_seed(args, storage: str, seed: int) -> dict:
    asha = _sweep(args, "asha", storage, seed)
    fifo = _sweep(args, "fifo", storage, seed)
    both_best = asha["best_accuracy"] is not None and fifo["best_accuracy"] is not None
    line = {
        "seed": seed, "same_configs": asha["params"] == fifo["params"],
        "fifo_wall_s": round(fifo["wall_s"], 1), "asha_wall_s": round(asha["wall_s"], 1),
        "ratio_asha_over_fifo": round(asha["wall_s"] / fifo["wall_s"], 3),
        "fifo_best_accuracy": fifo["best_accuracy"], "asha_best_accuracy": asha["best_accuracy"],
        "best_gap_points": round(100 * (fifo["best_accuracy"] - asha["best_accuracy"]), 2) if both_best else None,
        "fifo_best_lr": fifo["best_lr"], "asha_best_lr": asha["best_lr"],
        "asha_stopped_early": asha["stopped"], "asha_completed": asha["completed"],
        "fifo_completed": fifo["completed"], "errors": asha["errors"] + fifo["errors"],
        "fifo_epochs_trained": fifo["epochs_trained"], "asha_epochs_trained": asha["epochs_trained"],
        "ratio_epochs_asha_over_fifo": round(asha["epochs_trained"] / max(fifo["epochs_trained"], 1), 3),
        # Where the time goes: a trial's fixed cost (Tune actor, training set-up, data, compression)
        # against its epochs. A stopped trial skips compression but pays the rest.
        "fifo_mean_trial_s": _mean(fifo["trial_s"]["completed"]),
        "asha_mean_completed_trial_s": _mean(asha["trial_s"]["completed"]),
        "asha_mean_stopped_trial_s": _mean(asha["trial_s"]["stopped"]),
        "asha_stopped_at_epochs": sorted(asha["stopped_epochs"]),
        # Trial actors started, and the sweep's first trial, which pays the actor's start-up (the
        # per-trial means above include it: with few completed trials it weighs on ASHA's mean).
        "fifo_actors": fifo["actors"], "asha_actors": asha["actors"],
        "fifo_first_trial_s": _round(fifo["first_trial_s"]), "asha_first_trial_s": _round(asha["first_trial_s"]),
        "first_trial_epochs": {"fifo": fifo["first_trial_epochs"], "asha": asha["first_trial_epochs"]},
    }
    if args.show_trials:
        line |= {"asha_trials": asha["trials"], "fifo_trials": fifo["trials"]}
    return line


def _spread(runs: list[dict], key: str) -> dict | None:
    values = [r[key] for r in runs if r[key] is not None]
    if not values:
        return None
    return {"mean": round(sum(values) / len(values), 3), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="tune.seed (and train.seed) per repeat")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8, help="FIFO's budget per trial (ASHA's max)")
    parser.add_argument("--reduction-factor", type=float, default=3.0)
    parser.add_argument("--grace-period", type=int, default=None, help="default: rungs relative to the budget")
    parser.add_argument("--concurrency", type=int, default=1, help="trials at once, in both sweeps")
    parser.add_argument("--per-class", type=int, default=180, help="digits per class (180: all 1,797)")
    parser.add_argument("--lr-low", type=float, default=1e-5)
    parser.add_argument("--lr-high", type=float, default=1e-2)
    parser.add_argument("--show-trials", action="store_true", help="add each trial's lr/status/epochs to the line")
    args = parser.parse_args()

    from raylm.runtime import ensure_ray
    from raylm.tune.sweep import grace_period

    os.environ["OMP_NUM_THREADS"] = "1"
    start = time.perf_counter()
    # With a dashboard: it is the cluster's state API, which Train's placement-group cleaner asks
    # whether a run's controller lives; a trial ASHA stops gets its CPUs back only through it. On a
    # free port, so no other Ray instance on this machine asks ours (or ours theirs).
    ensure_ray(num_cpus=2, log_to_driver=False)  # a dashboard on a free port: ASHA needs the State API
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for seed in args.seeds:
            runs.append(_one_seed(args, tmp, seed))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)  # progress; the result line is stdout's
        grace = grace_period(_config(args, "asha", tmp, args.seeds[0]))

    summary = {key: _spread(runs, key) for key in ("ratio_asha_over_fifo", "best_gap_points", "fifo_wall_s", "asha_wall_s",
                                                   "fifo_best_accuracy", "asha_best_accuracy", "ratio_epochs_asha_over_fifo",
                                                   "fifo_mean_trial_s", "asha_mean_stopped_trial_s", "fifo_actors", "asha_actors")}
    ratio, gap = summary["ratio_asha_over_fifo"], summary["best_gap_points"]
    line = {
        "benchmark": "tune_asha", "dataset": f"digits x{args.per_class}/class", "model": "seed_cnn",
        "trials": args.trials, "epochs": args.epochs, "grace_period": round(grace, 3),
        "reduction_factor": args.reduction_factor, "concurrency": args.concurrency,
        "lr_range": [args.lr_low, args.lr_high], "cores": os.cpu_count(), "seeds": args.seeds,
        "errors": sum(r["errors"] for r in runs), "same_configs": all(r["same_configs"] for r in runs),
        "mean": summary,
        "goal_met": bool(ratio and gap and ratio["mean"] <= 0.4 and gap["mean"] <= 1.0),
        "runs": runs,
        "total_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
