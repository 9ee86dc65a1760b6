"""What Ray Tune adds: bookkeeping for trivial trials, and a real raylm trial vs the same run outside Tune.

    python benchmarks/tune_overhead.py [--trials 40] [--trial-s 2] [--concurrency 4] [--raylm-trials 2]

Measures, in one run on one local Ray (2 CPUs):
  * bookkeeping: ``--trials`` function trainables that each report once a second for ``--trial-s``
    seconds, ``--concurrency`` at a time, run with the Tune settings raylm's sweep uses
    (BasicVariantGenerator with max_concurrent, its result loggers: JSON and TensorBoard, no CSV; a
    storage path). Wall time of
    ``Tuner.fit()`` against the ideal ``trials x trial_s / concurrency`` (Ray's release test
    "bookkeeping overhead" does the same with 10,000 1-s trials on 16 CPUs: 715 s vs 625 s, +14 %).
    Twice: a fresh trial actor per trial and ``reuse_actors=True`` (the release test's setting, and
    raylm's for one-worker CPU trials, which train in their own actor).
  * raylm per trial: ``raylm.tune.sweep`` over ``--raylm-trials`` learning rates (a grid, 1 epoch,
    the tiny ``shapes`` image set, no pruning/quantization, one trial at a time) vs the same
    configs run one after the other with ``raylm.train.fit`` + ``raylm.compress.compress`` outside
    Tune (each decodes its data, and ``fit`` runs Ray Train's worker group). The sweep runs first:
    whatever the second pass gains from warm caches goes to the baseline.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _sleeper(config: dict) -> None:
    from ray import tune

    for step in range(config["reports"]):
        time.sleep(config["sleep_s"])
        tune.report({"step": step})


def _bookkeeping(args, storage: str, reuse_actors: bool) -> float:
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from raylm.tune.sweep import only_these_loggers, result_loggers

    trainable = tune.with_resources(_sleeper, {"CPU": 1.0 / args.concurrency})
    tuner = tune.Tuner(
        trainable,
        param_space={"reports": args.trial_s, "sleep_s": 1.0, "seed": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(search_alg=BasicVariantGenerator(random_state=0, max_concurrent=args.concurrency),
                                    num_samples=args.trials, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=f"sleep-reuse{int(reuse_actors)}", storage_path=storage,
                                  callbacks=result_loggers(), verbose=0),
    )
    start = time.perf_counter()
    with only_these_loggers():
        grid = tuner.fit()
    wall = time.perf_counter() - start
    if grid.num_errors or len(grid) != args.trials:
        raise RuntimeError(f"bookkeeping run: {grid.num_errors} errors in {len(grid)} trials")
    return wall


def _raylm_config(args, storage: str, name: str):
    from raylm.config import load_config

    lrs = [0.003 * 0.5 ** i for i in range(args.raylm_trials)]
    return load_config(None, [
        "task.modality=image", "data.name=shapes", f"data.samples_per_class={args.per_class}",
        "data.materialize=true", "model.name=seed_cnn", "train.epochs=1", "train.num_workers=1",
        "train.cpus_per_worker=0.5", "train.log_every_n_steps=100000", f"train.storage_path={storage}",
        f"train.name={name}", "compress.latency_runs=3", "compress.latency_warmup=1",
        f"tune.space={{train.lr: {{grid: {json.dumps(lrs)}}}}}", "tune.objectives=[accuracy]",
        "tune.num_samples=1", "tune.max_concurrent_trials=1", "tune.trial_cpus=0.25", "tune.export=none",
    ])


def _raylm_in_tune(args, storage: str) -> tuple[float, list[float]]:
    from raylm.tune import sweep

    start = time.perf_counter()
    result = sweep(_raylm_config(args, storage, "in-tune"), verbose=False)
    wall = time.perf_counter() - start
    if [r["status"] for r in result.rows] != ["completed"] * args.raylm_trials:
        raise RuntimeError(f"raylm sweep: {[(r['status'], r.get('error')) for r in result.rows]}")
    return wall, [r["time_s"] for r in result.rows]


def _raylm_direct(args, storage: str) -> list[float]:
    """The sweep's trial configs, each trained and compressed in this process, no Tune."""
    from raylm.compress import compress
    from raylm.train import fit
    from raylm.tune.space import trial_config

    cfg = _raylm_config(args, storage, "direct")
    base = cfg.to_dict()
    walls = []
    for i, lr in enumerate(cfg.tune.space["train.lr"].values):
        trial = trial_config(base, {"train.lr": lr}, storage_path=str(Path(storage) / "direct"), name=f"lr{i}")
        start = time.perf_counter()
        outcome = fit(trial)
        compress(trial, outcome.best_checkpoint, verbose=False)
        walls.append(time.perf_counter() - start)
    return walls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40, help="trivial trials")
    parser.add_argument("--trial-s", type=int, default=2, help="seconds per trivial trial (one report a second)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--raylm-trials", type=int, default=2, help="real raylm trials (0: skip that part)")
    parser.add_argument("--per-class", type=int, default=200, help="shapes images per class for the raylm trials")
    args = parser.parse_args()

    from raylm.runtime import ensure_ray

    os.environ["OMP_NUM_THREADS"] = "1"
    # raylm's sweep sets this too: our objectives arrive only in a trial's last report.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # With a dashboard: it is the cluster's state API, which Train's placement-group cleaner asks
    # whether a run's controller lives; a trial ASHA stops gets its CPUs back only through it. On a
    # free port, so no other Ray instance on this machine asks ours (or ours theirs).
    ensure_ray(num_cpus=2, log_to_driver=False)  # a dashboard on a free port: ASHA needs the State API
    ideal = args.trials * args.trial_s / args.concurrency
    line = {"benchmark": "tune_overhead", "cores": os.cpu_count(), "trivial_trials": args.trials,
            "trial_s": args.trial_s, "concurrency": args.concurrency, "ideal_s": round(ideal, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for reuse in (False, True):
            wall = _bookkeeping(args, tmp, reuse)
            key = "reuse_actors" if reuse else "fresh_actors"
            line |= {f"{key}_wall_s": round(wall, 2), f"{key}_overhead_pct": round(100 * (wall / ideal - 1), 1)}
        if args.raylm_trials:
            sweep_wall, trial_s = _raylm_in_tune(args, tmp)
            direct = _raylm_direct(args, tmp)
            n = args.raylm_trials
            line |= {
                "raylm_trials": n, "raylm_dataset": f"shapes x{args.per_class}/class", "raylm_epochs": 1,
                "raylm_sweep_wall_s": round(sweep_wall, 2), "raylm_direct_wall_s": round(sum(direct), 2),
                "raylm_tune_trial_s": [round(t, 2) for t in trial_s], "raylm_direct_run_s": [round(t, 2) for t in direct],
                "raylm_ratio_sweep_over_direct": round(sweep_wall / sum(direct), 3),
                "raylm_added_s_per_trial": round((sweep_wall - sum(direct)) / n, 2),
            }
    line["goal_overhead_le_10pct"] = line["reuse_actors_overhead_pct"] <= 10
    if args.raylm_trials:
        line["goal_raylm_ratio_le_1_10"] = line["raylm_ratio_sweep_over_direct"] <= 1.10
    print(json.dumps(line))


if __name__ == "__main__":
    main()
