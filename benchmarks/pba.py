"""Population Based Augmentation in PBA's own setting: a reduced image training set where augmentation matters.

    python benchmarks/pba.py [--data digits|shapes] [--per-class N] [--train-fraction 0.15] [--trials 8] [--epochs 6]
                             [--interval 2] [--final-epochs 12] [--seeds 0 1 2] [--search-per-seed] [--border replicate]
                             [--concurrency 8 --cpus-per-worker 0.125] [--search-only]
                             [--fixed-budget equal-trial-epochs|equal-trials] [--explore scale|pba]
                             [--select-on held-out|validation] [--population pbt|pb2] [--keep-work]

``--concurrency`` = ``--trials`` (fractional CPUs): the whole population live, no trial takes turns
(docs/pbt.md); both searches run at the same settings. ``--search-only``: the walls, no final runs.

The setting where augmentation helps at all (benchmarks/pba_setting.py, docs/pbt.md "Choosing the
setting"): ``--data shapes --per-class 800 --train-fraction 0.1`` (384 training images); on digits
no augmented arm beat no augmentation.

An image demo (``digits`` or ``shapes``, ``seed_cnn``: jobs/configs/image_pbt.yaml's model) split once
(seed 0) into the whole validation split (20 %), a training set of ``--train-fraction`` of the
rest, and a search validation split of the validation's size from what is left: the searches rank
their trials on it (``--select-on held-out``, PBA's protocol), the final runs are scored on the
validation split alone. Four arms, each ending in a fresh training run of ``--final-epochs`` per seed, scored by its
last epoch's accuracy on the whole validation split:

(a) ``none``: no augmentation;
(b) ``asha``: the best fixed policy of a random search + ASHA sweep. ``--fixed-budget
    equal-trial-epochs`` (the default, the issue's setting): it samples trials until they have trained
    PBT's ``--trials`` x ``--epochs`` trial-epochs (``tune.max_trial_epochs``; ASHA stops trials early, so
    it tries more of them); ``equal-trials``: ``--trials`` trials, so fewer trial-epochs than PBT's;
(c) ``pbt``: the schedule a PBT sweep learned (``--trials`` x ``--epochs``, the same trial-epochs
    as (b)'s budget), replayed (``augment.schedule``, stretched to ``--final-epochs``);
(d) ``uniform``: every op at one fixed magnitude (``--magnitude`` of its range; RandAugment-style).

(b) and (c) search the same space (lr and six image ops). Their search wall times are measured in
the same process, one after the other (PBT first, so warm caches favour ASHA's); ``pbt_vs_asha_time``
is their ratio; ``search_timeline`` says where each went (slot-seconds in epochs and in the last
iteration's measurement, summed over trials, and when the first and last epochs were reported). Both
sweeps rank on accuracy and export nothing, so neither compresses or measures its trials (docs/pbt.md;
raylm/tune/trial.py ``measures_trials``).
Searches run once (``tune.seed`` 0) unless ``--search-per-seed``; final runs per seed (``train.seed``). Prints JSON lines: one per arm and seed, then a summary with means, the
issue's goals and the load average (this machine is shared: timings are noisy, ratios are
same-run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# The searched space per demo: lr and the image ops, at ranges that keep the label (a digit rotated
# by 90 degrees is another digit; a shape rotated by any angle, or mirrored, is the same shape).
SPACES = {
    "digits": {
        "train.lr": {"loguniform": [0.001, 0.005]},
        "augment.image.rotate_p": {"uniform": [0.0, 0.8]},
        "augment.image.max_rotation": {"uniform": [0.0, 20.0]},
        "augment.image.crop_p": {"uniform": [0.0, 0.8]},
        "augment.image.brightness": {"uniform": [0.0, 0.3]},
        "augment.image.contrast": {"uniform": [0.0, 0.3]},
        "augment.image.cutout_p": {"uniform": [0.0, 0.5]},
    },
    "shapes": {
        "train.lr": {"loguniform": [0.001, 0.005]},
        "augment.image.rotate_p": {"uniform": [0.0, 1.0]},
        "augment.image.max_rotation": {"uniform": [0.0, 180.0]},
        "augment.image.crop_p": {"uniform": [0.0, 0.8]},
        "augment.image.hflip_p": {"uniform": [0.0, 0.5]},
        "augment.image.brightness": {"uniform": [0.0, 0.3]},
        "augment.image.contrast": {"uniform": [0.0, 0.3]},
        "augment.image.cutout_p": {"uniform": [0.0, 0.5]},
    },
}


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def reduced_split(cache: Path, fraction: float, work: Path, name: str = "digits",
                  per_class: int | None = None) -> tuple[Path, Path, Path]:
    """(train dir, validation dir, search validation dir) of class folders: 20 % of each class for
    validation (all of it is scored), ``fraction`` of the remaining files for training, and as many
    files as the validation's from those left for the searches to rank trials on (PBA's held-out
    search validation: a search that ranks on the scored split picks the luckiest of its draws on the
    very images that score it, and a random search draws more of them than a population has trials);
    file lists drawn with seed 0."""
    from raylm.config import load_config
    from raylm.data import demo

    overrides = ["task.modality=image", "model.name=seed_cnn", f"data.cache_dir={cache}"]
    if per_class:  # the demo's size (shapes draws any number; digits has at most ~180 per class)
        overrides.append(f"data.samples_per_class={per_class}")
    source = Path(getattr(demo, name)(load_config(None, overrides)))
    train_dir, val_dir, search_dir = work / "train", work / "validation", work / "search-validation"
    rng = random.Random(0)
    for label_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(p for p in label_dir.iterdir() if p.is_file())
        rng.shuffle(files)
        n_val = round(0.2 * len(files))
        rest = files[n_val:]
        n_train = max(1, round(fraction * len(rest)))
        left = rest[n_train:]
        if len(left) < n_val:
            raise SystemExit(f"{label_dir.name}: {len(left)} files left for the search validation, {n_val} wanted: "
                             "lower --train-fraction or raise --per-class")
        for target, chosen in ((val_dir, files[:n_val]), (train_dir, rest[:n_train]), (search_dir, left[:n_val])):
            (target / label_dir.name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy2(f, target / label_dir.name / f.name)
    return train_dir, val_dir, search_dir


def base_tree(args, train_dir: Path, val_dir: Path, storage: Path) -> dict:
    tree = yaml.safe_load((ROOT / "jobs/configs/image_pbt.yaml").read_text())
    for key in ("tune", "pipeline", "serve", "compress"):
        tree.pop(key, None)
    tree["data"] = {"path": str(train_dir), "validation_path": str(val_dir), "materialize": True}
    tree["train"] |= {"storage_path": str(storage), "epochs": args.epochs, "num_workers": 1,
                      "cpus_per_worker": args.cpus_per_worker}
    tree["compress"] = {"latency_runs": 3, "latency_warmup": 1}
    # What a rotation fills outside the image: replicate keeps the plain background every validation
    # image has (black corners are a look no validation image has: docs/pbt.md, "Choosing the setting").
    tree["augment"] = {"image": {"border": args.border}}
    return tree


def warm_up(args, tree: dict) -> float:
    """A 2-trial, 2-epoch PBT sweep, not scored: the first sweep of a process pays imports, Tune's
    first start and the trial actors' first torch import (50 s to Tune's start vs 18 s for the second
    sweep, seen); measured searches then start equally warm, whichever runs first."""
    from raylm.config import merge, validate_config
    from raylm.tune import sweep

    tune = {"space": SPACES[args.data], "search": "random", "scheduler": "pbt", "num_samples": 2, "seed": 99,
            "objectives": ["accuracy"], "export": "none", "max_concurrent_trials": args.concurrency,
            "measure_on": "trial", "perturbation_interval": 1}
    started = time.perf_counter()
    sweep(validate_config(merge(tree, {"tune": tune, "train": {"name": "warm-up", "epochs": 2}})), verbose=False)
    return time.perf_counter() - started


def search(args, tree: dict, scheduler: str, seed: int) -> tuple[dict, float, dict]:
    """(the sweep's best row, its wall time, extra facts)."""
    from raylm.config import merge, validate_config
    from raylm.tune import sweep

    tune = {"space": SPACES[args.data], "search": "random", "scheduler": scheduler, "num_samples": args.trials, "seed": seed,
            "objectives": ["accuracy"], "export": "none", "max_concurrent_trials": args.concurrency,
            "measure_on": "trial"}
    if scheduler == "pbt":  # the population arm: PBT, or PB2 (its GP-bandit explore) with --population pb2
        tune |= {"scheduler": args.population, "perturbation_interval": args.interval, "quantile_fraction": 0.25}
        if args.population == "pbt":
            tune["explore"] = args.explore
    elif args.fixed_scheduler == "asha":
        tune |= {"reduction_factor": 2}
    else:  # fifo: every trial trains all its epochs, the same trial-epochs as PBT's
        tune["scheduler"] = "fifo"
    if scheduler != "pbt" and args.fixed_budget == "equal-trial-epochs":
        # PBT's population trains every trial to the end: trials x epochs. The fixed search samples
        # trials (the same first draws: the same seed) until its trials have trained as many.
        budget = args.trials * args.epochs
        tune |= {"max_trial_epochs": budget, "num_samples": budget}
    cfg = validate_config(merge(tree, {"tune": tune, "train": {"name": f"{scheduler}-search-{seed}"}}))
    started, started_at = time.perf_counter(), time.time()
    result = sweep(cfg, verbose=False)
    wall = time.perf_counter() - started
    epochs = sum(int(r.get("epochs") or 0) for r in result.rows)
    statuses = [r["status"] for r in result.rows]
    extra = {"trial_epochs": epochs, "trials": len(statuses), "completed": statuses.count("completed"),
             "schedule": str(result.files.get("schedule")) if result.files.get("schedule") else None,
             "best_search_accuracy": result.best and result.best.get("val_accuracy"),
             "timeline": search_timeline(result.tune_dir, started_at)}
    if extra["schedule"]:  # what was learned, for the report: exploits along the lineage, first and last epoch's values
        learned = json.loads(Path(extra["schedule"]).read_text())
        extra["exploits"] = len(learned["exploits"])
        extra["first_last"] = [{k: round(v, 4) for k, v in learned["per_epoch"][i]["values"].items()} for i in (0, -1)]
    return result.best, wall, extra


def search_timeline(tune_dir: Path, started_at: float) -> dict:
    """Where a search's time went, from Tune's per-trial result.json: slot-seconds (summed over trials,
    which run side by side) in epochs and in the last iteration (compress and measure), and the
    seconds after the sweep's start at which the first and the last epoch were reported."""
    epoch_s = measure_s = 0.0
    stamps = []
    for log in tune_dir.glob("*/result.json"):
        for line in log.read_text().splitlines():
            result = json.loads(line)
            if result.get("compressed"):
                measure_s += float(result.get("time_this_iter_s") or 0.0)
            elif "epoch" in result:
                epoch_s += float(result.get("time_this_iter_s") or 0.0)
                stamps.append(float(result.get("timestamp") or 0.0) - started_at)
    return {"epoch_slot_s": round(epoch_s, 1), "measure_slot_s": round(measure_s, 1),
            "first_epoch_at_s": round(min(stamps), 1) if stamps else None,
            "last_epoch_at_s": round(max(stamps), 1) if stamps else None}


def final_run(args, tree: dict, arm: str, seed: int, changes: dict) -> float:
    from raylm.config import merge, validate_config
    from raylm.train import build_trainer

    train = {"epochs": args.final_epochs, "seed": seed, "name": f"final-{arm}-{seed}"}
    cfg = validate_config(merge(merge(tree, {"train": train}), _tree(changes)))
    # One CPU worker, trained in this process (Train V2's local mode, as a sweep's trial trains): the
    # arms differ only in their augmentation, not in worker-group start-up.
    trainer, _ = build_trainer(cfg, in_process=True)
    result = trainer.fit()
    return float(result.metrics["val_accuracy"])  # the last epoch's, on the whole validation split


def _tree(changes: dict) -> dict:
    from raylm.config import _set_dotted

    tree: dict = {}
    for path, value in changes.items():
        _set_dotted(tree, path, value)
    return tree


def uniform_policy(magnitude: float, data: str = "digits") -> dict:
    """Every op of the space at ``magnitude`` of its range, lr at the base config's."""
    return {path: spec["uniform"][0] + magnitude * (spec["uniform"][1] - spec["uniform"][0])
            for path, spec in SPACES[data].items() if "uniform" in spec}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=sorted(SPACES), default="digits", help="the image demo to reduce")
    parser.add_argument("--per-class", type=int, default=None, help="the demo's samples per class (its default if not given)")
    parser.add_argument("--train-fraction", type=float, default=0.15)
    parser.add_argument("--border", choices=["constant", "replicate", "reflect"], default="replicate",
                        help="augment.image.border of every arm")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false", help="skip the unscored warm-up sweep")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6, help="per search trial")
    parser.add_argument("--interval", type=int, default=2, help="PBT perturbation interval, epochs")
    parser.add_argument("--final-epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--search-per-seed", action="store_true")
    parser.add_argument("--magnitude", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=float, default=0.5)
    parser.add_argument("--arms", nargs="+", default=["none", "asha", "pbt", "uniform"])
    parser.add_argument("--search-only", action="store_true",
                        help="the searches' walls and trial-epochs only: no final runs (measuring the search cost)")
    parser.add_argument("--select-on", choices=["held-out", "validation"], default="held-out",
                        help="what the searches rank trials on: a held-out search validation split (PBA's protocol) "
                             "or the scored validation split itself (the figures before stop 43)")
    parser.add_argument("--explore", choices=["scale", "pba"], default="scale",
                        help="the PBT arm's tune.explore: scale (Ray's PBT, sampled starts) or pba (PBA's: "
                             "augmentations start at zero and step in tenths of their range)")
    parser.add_argument("--keep-work", action="store_true", help="keep the data, runs and Tune folders (path printed)")
    parser.add_argument("--population", choices=["pbt", "pb2"], default="pbt",
                        help="the population arm's scheduler: PBT, or PB2 (GP-bandit explore; needs GPy)")
    parser.add_argument("--fixed-scheduler", choices=["asha", "fifo"], default="asha",
                        help="the scheduler of arm (b)'s random search (its arm keeps the name asha)")
    parser.add_argument("--fixed-budget", choices=["equal-trial-epochs", "equal-trials"], default="equal-trial-epochs",
                        help="arm (b)'s search: PBT's trial-epochs (trials x epochs; it samples more trials) or "
                             "PBT's trial count (ASHA then trains fewer trial-epochs)")
    args = parser.parse_args()

    from raylm.runtime import ensure_ray

    work = Path(tempfile.mkdtemp(prefix="raylm-pba-"))
    lines = []
    try:
        train_dir, val_dir, search_val_dir = reduced_split(work / "cache", args.train_fraction, work / "data", args.data,
                                                           args.per_class)
        tree = base_tree(args, train_dir, val_dir, work / "runs")
        # What the searches rank their trials on: the held-out search validation (default) or the scored split.
        search_tree = base_tree(args, train_dir, search_val_dir if args.select_on == "held-out" else val_dir,
                                work / "runs")
        for attempt in range(8):  # on a machine at load 100 Ray's raylet may miss its 30 s start-up window
            try:
                ensure_ray()
                break
            except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception for it
                import ray

                ray.shutdown()
                if attempt == 7 or "timed out during startup" not in str(err):
                    raise
        warm_s = warm_up(args, search_tree) if args.warm_up and {"pbt", "asha"} & set(args.arms) else None
        searched: dict[tuple[str, int], tuple[dict, float, dict]] = {}
        for seed in args.seeds:
            search_seed = seed if args.search_per_seed else args.seeds[0]
            for scheduler in ("pbt", "asha"):  # PBT first: warm caches favour ASHA's time
                if scheduler in args.arms and (scheduler, search_seed) not in searched:
                    searched[(scheduler, search_seed)] = search(args, search_tree, scheduler, search_seed)
            for arm in [] if args.search_only else args.arms:
                changes: dict = {}
                search_s = trial_epochs = None
                if arm in ("asha", "pbt"):
                    best, search_s, extra = searched[(arm, search_seed)]
                    trial_epochs = extra["trial_epochs"]
                    if arm == "asha":
                        changes = dict(best["params"])
                    elif extra["schedule"]:
                        changes = {"augment.schedule": extra["schedule"]}
                    else:
                        raise RuntimeError("the PBT sweep wrote no schedule.json")
                elif arm == "uniform":
                    changes = uniform_policy(args.magnitude, args.data)
                started = time.perf_counter()
                accuracy = final_run(args, tree, arm, seed, changes)
                line = {"bench": "pba", "arm": arm, "seed": seed, "val_accuracy": round(accuracy, 4),
                        "search_s": None if search_s is None else round(search_s, 1), "search_trial_epochs": trial_epochs,
                        "search_trials": extra.get("trials") if search_s is not None else None,
                        "final_s": round(time.perf_counter() - started, 1), "load_avg": _load()}
                if arm in ("asha", "pbt"):
                    line |= {k: extra.get(k) for k in ("best_search_accuracy", "exploits", "first_last") if k in extra}
                    if arm == "asha":
                        line["policy"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in changes.items()}
                lines.append(line)
                print(json.dumps(line), flush=True)
        mean = {arm: statistics.mean(l["val_accuracy"] for l in lines if l["arm"] == arm) for arm in args.arms
                if any(l["arm"] == arm for l in lines)}
        # With --search-per-seed: each scheduler's searches summed (one search each otherwise).
        walls: dict[str, float] = {}
        for (s, _), (_, w, _) in searched.items():
            walls[s] = walls.get(s, 0.0) + w
        summary = {"bench": "pba", "summary": True, "mean_val_accuracy": {k: round(v, 4) for k, v in mean.items()},
                   "seeds": args.seeds, "train_fraction": args.train_fraction, "trials": args.trials, "epochs": args.epochs,
                   "final_epochs": args.final_epochs, "population": args.population, "explore": args.explore, "select_on": args.select_on, "data": args.data, "per_class": args.per_class,
                   "train_rows": sum(1 for _ in train_dir.rglob("*.png")), "border": args.border,
                   "warm_up_s": None if warm_s is None else round(warm_s, 1), "search_s": {k: round(v, 1) for k, v in walls.items()},
                   "load_avg": _load()}
        if {"pbt", "asha"} <= set(walls):
            summary["pbt_vs_asha_time"] = round(walls["pbt"] / walls["asha"], 2)
            epochs, trials, completed = {}, {}, {}
            for (s, _), (_, _, extra) in searched.items():
                epochs[s] = epochs.get(s, 0) + extra["trial_epochs"]
                trials[s] = trials.get(s, 0) + extra["trials"]
                completed[s] = completed.get(s, 0) + extra["completed"]
            summary["search_trial_epochs"], summary["search_trials"], summary["search_trials_completed"] = epochs, trials, completed
            summary["searches"] = len({seed for _, seed in searched})
            summary["pbt_vs_asha_time_by_search"] = [
                round(searched[("pbt", seed)][1] / searched[("asha", seed)][1], 2)
                for seed in sorted({seed for _, seed in searched}) if ("pbt", seed) in searched and ("asha", seed) in searched]
            summary["fixed_budget"] = args.fixed_budget
            summary["search_timeline"] = {f"{s}-{seed}": extra["timeline"] for (s, seed), (_, _, extra) in searched.items()}
            summary["fixed_scheduler"] = args.fixed_scheduler
            # Per trial-epoch: ASHA stops trials early, so its wall covers fewer epochs than PBT's.
            summary["pbt_vs_asha_time_per_trial_epoch"] = round(
                (walls["pbt"] / max(epochs["pbt"], 1)) / (walls["asha"] / max(epochs["asha"], 1)), 2)
        if {"pbt", "asha"} <= set(mean):
            summary["pbt_minus_asha_pts"] = round(100 * (mean["pbt"] - mean["asha"]), 2)
            summary["goal_met"] = summary["pbt_minus_asha_pts"] >= 1.0 and summary["pbt_vs_asha_time"] <= 1.2 and \
                mean["pbt"] > mean.get("none", 0.0)
        print(json.dumps(summary), flush=True)
    finally:
        if args.keep_work:  # the searches' Tune folders (per-trial result.json, pbt_policy logs), for a look afterwards
            print(json.dumps({"bench": "pba", "work": str(work)}), flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
