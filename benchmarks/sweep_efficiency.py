"""How close the main job's sweep comes to what the machine can do (issue 25, item 5).

    python benchmarks/sweep_efficiency.py [--config jobs/configs/image_tune.yaml] [--num-samples 12] [KEY=VALUE ...]

Measures, in one run on one embedded local Ray:
  * the physical limit: ``benchmarks/plain_loop.py`` (plain PyTorch, one thread, the sweep's model,
    batch size and lr) over the sweep's own decoded train split, as epochs per second; the machine's
    limit is ``cores x`` that;
  * the sweep: ``raylm.tune.sweep`` of the config (the main job's: ``jobs/configs/image_tune.yaml``),
    timed from the call to the answer (the table: the Pareto front and the best trial) and to its
    return, with the fixed costs apart: Ray's start, the one decode, Tune's start (until the first
    trial's first epoch begins), the first epoch of the first trials, each trial's compression and
    measurement (its last Tune iteration), the Pareto plot.

``efficiency``: trial-epochs (epochs trained in the trials, one per epoch report) per second of the
sweep's wall time (Ray already up) over ``cores x`` the plain loop's epochs per second; the goal is
>= 0.6. ``efficiency_training``: the same over the window in which trials trained (first epoch's start
to the last report), i.e. without the decode and Tune's start; ``efficiency_with_finetune`` also
counts the epochs each pruned trial's compression fine-tunes (``compress.finetune_epochs``). Run it at normal priority on a machine
others share; the load average is printed at the start and the end. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _timed(owner, name: str, into: dict[str, float], key: str) -> None:
    """Wrap ``owner.name`` so each call's seconds add up in ``into[key]`` (the sweep's phases, unchanged)."""
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            into[key] = into.get(key, 0.0) + time.perf_counter() - started

    setattr(owner, name, wrapper)


def typical_augmentation(cfg) -> str:
    """The trials' typical ``augment.image`` policy as ``plain_loop.py --augment``: the config's, with
    each searched ``augment.image.*`` field at its range's midpoint (its first choice)."""
    values = cfg.augment.image.model_dump()
    for path, dim in cfg.tune.space.items():
        if path.startswith("augment.image."):
            field = path.removeprefix("augment.image.")
            values[field] = (sum(dim.values) / 2) if dim.kind in ("uniform", "loguniform", "randint") else dim.values[0]
    return ",".join(f"{k}={v}" for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool))


def _plain_epochs_per_s(cfg, npz: Path) -> tuple[float, float, int, str]:
    """The plain loop on the sweep's decoded train split, without and with the trials' typical
    augmentation: (epochs/s, epochs/s augmenting, samples per epoch, the augmentation)."""
    from raylm.data import decode_splits

    decoded = decode_splits(cfg)
    batches = list(decoded.train.iter_batches(batch_size=1024, batch_format="numpy"))
    images = np.concatenate([b["image"] for b in batches])
    np.savez(npz, image=images, label=np.concatenate([b["label"] for b in batches]), num_classes=len(decoded.labels))
    augment = typical_augmentation(cfg)
    rates = []
    for extra in ([], ["--augment", augment]):
        cmd = [sys.executable, "benchmarks/plain_loop.py", "--data", str(npz), "--model", cfg.model.name,
               "--epochs", "4", "--batch-size", str(cfg.train.batch_size), "--lr", str(cfg.train.lr), *extra]
        env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
        rates.append(json.loads(out.strip().splitlines()[-1])["samples_per_s"] / len(images))
    return rates[0], rates[1], len(images), augment


def _trial_reports(tune_dir: Path) -> list[list[dict]]:
    """Each trial's Tune results (``result.json``), in report order."""
    trials = []
    for result in tune_dir.glob("*/result.json"):
        trials.append([json.loads(line) for line in result.read_text().splitlines() if line.strip()])
    return trials


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="jobs/configs/image_tune.yaml")
    parser.add_argument("--num-samples", type=int, default=None, help="tune.num_samples (default: the config's)")
    parser.add_argument("overrides", nargs="*", help="config overrides, KEY=VALUE")
    args = parser.parse_args()

    load_start = _load()
    os.environ["OMP_NUM_THREADS"] = "1"
    import importlib

    results = importlib.import_module("raylm.tune.results")
    sweep_module = importlib.import_module("raylm.tune.sweep")  # the module: raylm.tune.sweep is also its function
    from raylm.config import load_config
    from raylm.runtime import ensure_ray

    phases: dict[str, float] = {}
    started = time.perf_counter()
    ensure_ray(log_to_driver=False)  # what `raylm tune` starts: an embedded Ray with the machine's CPUs
    phases["ray_start_s"] = time.perf_counter() - started
    _timed(sweep_module, "_decode_once", phases, "decode_s")
    _timed(results, "plot_front", phases, "plot_s")
    answered: list[float] = []
    format_table = results.format_table

    def table_then_clock(*a, **kw):  # the answer: the table `raylm tune` prints (front and best)
        answered.append(time.perf_counter())
        return format_table(*a, **kw)

    results.format_table = table_then_clock

    with tempfile.TemporaryDirectory(prefix="raylm-sweep-eff-") as tmp:
        extra = [f"tune.num_samples={args.num_samples}"] if args.num_samples else []
        cfg = load_config(args.config, [*args.overrides, *extra, f"train.storage_path={tmp}", "train.name=sweep"])
        limit_started = time.perf_counter()
        plain_eps, plain_aug_eps, train_samples, augment = _plain_epochs_per_s(cfg, Path(tmp) / "train.npz")
        phases["plain_loop_s"] = time.perf_counter() - limit_started
        load_sweep = _load()
        sweep_started, sweep_started_wall = time.perf_counter(), time.time()
        result = sweep_module.sweep(cfg, verbose=True)
        returned = time.perf_counter()
        reports = _trial_reports(result.tune_dir)

    epochs = [r for trial in reports for r in trial if "epoch" in r and not r.get("compressed")]
    finals = [r for trial in reports for r in trial if r.get("compressed")]
    first_epochs = [trial[0] for trial in reports if trial and "epoch" in trial[0]]
    first_start = min(r["train_started"] for r in epochs)
    last_report = max(r["timestamp"] for trial in reports for r in trial)
    cores = os.cpu_count() or 1
    limit = cores * plain_eps
    sweep_s = (answered[0] if answered else returned) - sweep_started
    training_window = max(last_report - first_start, 1e-9)
    statuses = [r["status"] for r in result.rows]
    # A pruned trial's compression fine-tunes compress.finetune_epochs more epochs: trained epochs too.
    finetune = sum(cfg.compress.finetune_epochs for r in result.rows if r["status"] == "completed"
                   and (r.get("params") or {}).get("compress.prune.method", cfg.compress.prune.method) != "none")
    limit_aug = cores * plain_aug_eps
    first_mean = float(np.mean([r["time_this_iter_s"] for r in first_epochs]))
    later = [r["time_this_iter_s"] for trial in reports for r in trial[1:] if "epoch" in r and not r.get("compressed")]
    later_mean = float(np.mean(later or [0]))
    compress_mean = float(np.mean([r["time_this_iter_s"] for r in finals] or [0]))
    tune_start = first_start - sweep_started_wall - phases.get("decode_s", 0.0)
    # The arithmetic bound: these fixed costs on top of the trial-epochs at the plain loop's speed (two
    # trials side by side; compression and measurement of the trials shared by the cores).
    concurrent = max(1, min(cores, len(first_epochs)))
    fixed = (phases.get("decode_s", 0.0) + tune_start + max(first_mean - later_mean, 0.0)
             + compress_mean * len(finals) / concurrent)
    ideal = len(epochs) / limit
    line = {
        "benchmark": "sweep_efficiency", "config": args.config, "overrides": args.overrides, "cores": cores,
        "model": cfg.model.name, "train_samples": train_samples, "batch_size": cfg.train.batch_size,
        "trials": len(result.rows), "completed": statuses.count("completed"), "stopped": statuses.count("stopped"),
        "trial_epochs": len(epochs),
        "plain_samples_per_s": round(plain_eps * train_samples, 1), "plain_epochs_per_s": round(plain_eps, 3),
        "limit_epochs_per_s": round(limit, 3),
        "plain_augmented": augment, "plain_augmented_samples_per_s": round(plain_aug_eps * train_samples, 1),
        "limit_augmented_epochs_per_s": round(limit_aug, 3),
        "sweep_to_answer_s": round(sweep_s, 2), "sweep_to_return_s": round(returned - sweep_started, 2),
        "trial_epochs_per_s": round(len(epochs) / sweep_s, 3),
        "efficiency": round(len(epochs) / sweep_s / limit, 3),
        "efficiency_training": round(len(epochs) / training_window / limit, 3),
        "efficiency_vs_augmented": round(len(epochs) / sweep_s / limit_aug, 3),
        "efficiency_training_vs_augmented": round(len(epochs) / training_window / limit_aug, 3),
        # What these fixed costs allow at best: the trial-epochs at the plain speed plus the fixed seconds.
        "fixed_total_s": round(fixed, 2), "trial_epochs_at_plain_speed_s": round(ideal, 2),
        "efficiency_bound": round(ideal / (ideal + fixed), 3),
        "finetune_epochs": finetune,
        "efficiency_with_finetune": round((len(epochs) + finetune) / sweep_s / limit, 3),
        "fixed_costs_s": {
            **{k: round(v, 2) for k, v in phases.items() if k != "plain_loop_s"},
            # Tune's start: from sweep() (after the decode) to the first trial's first epoch beginning
            "tune_start_s": round(tune_start, 2),
            "first_epoch_mean_s": round(first_mean, 2),
            "first_epoch_data_wait_s": round(float(np.mean([r.get("data_wait_first_batch_s", 0) for r in first_epochs])), 2),
            "later_epoch_mean_s": round(later_mean, 2),
            "compress_and_measure_mean_s": round(compress_mean, 2),
            "after_answer_s": round(returned - (answered[0] if answered else returned), 2),
        },
        "train_samples_per_s_mean": round(float(np.mean([r["train_samples_per_s"] for r in epochs])), 1),
        # Epochs after a trial's first: its steady speed (two trials side by side share the cores).
        "train_samples_per_s_later_epochs": round(float(np.mean([r["train_samples_per_s"] for trial in reports
                                                                 for r in trial[1:] if "epoch" in r and not r.get("compressed")]
                                                                or [0])), 1),
        "load_avg_start": load_start, "load_avg_sweep_start": load_sweep, "load_avg_end": _load(),
    }
    line["goal_efficiency_ge_0_6"] = line["efficiency"] >= 0.6
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
