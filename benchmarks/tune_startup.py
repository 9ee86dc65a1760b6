"""Where a sweep trial's fixed cost goes: each phase of a trial timed on its own.

    python benchmarks/tune_startup.py [--repeats 2] [--per-class 180]

One local Ray (2 CPUs); the data and model of jobs/configs/image_tune.yaml (``digits``, ``seed_cnn``),
1 epoch, cheap compression (no pruning or quantization, a few latency runs). Median over
``--repeats`` of:

  actor_start_s       a fresh Ray actor (0.5 CPU) importing what a trial imports before it trains
                      (torch, Ray Train, raylm's loop): what a trial pays without actor reuse, and
                      what each Train worker-group process pays again
  decode_s            listing, reading, decoding and materializing both splits: what every trial
                      paid before; now the sweep pays it once and hands the splits to its trials
  fit_worker_group_s  raylm's Ray Train run on 1 worker (controller + worker group + the epoch),
                      from already decoded splits: how a one-worker trial trained before
  fit_in_process_s    the same epoch under Train V2's local mode in this process, as a one-worker
                      trial trains now (model built, epoch, validation, checkpoint written)
  compress_s          compress and measure the best checkpoint (every completed trial pays it)

``worker_group_overhead_s`` = fit_worker_group_s - fit_in_process_s. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _config(args, storage: str, name: str):
    from raylm.config import merge, parse_overrides, validate_config

    tree = yaml.safe_load((ROOT / "jobs/configs/image_tune.yaml").read_text())
    tree.pop("tune"), tree.pop("compress")
    return validate_config(merge(tree, parse_overrides([
        f"data.samples_per_class={args.per_class}", "data.materialize=true", "train.epochs=1",
        "train.num_workers=1", "train.cpus_per_worker=0.5", "train.log_every_n_steps=100000",
        f"train.storage_path={storage}", f"train.name={name}",
        "compress.latency_runs=3", "compress.latency_warmup=1",
    ])))


def _actor_start_s() -> float:
    import ray

    @ray.remote(num_cpus=0.5)
    class TrialLike:
        def ready(self) -> bool:
            import ray.train.torch  # noqa: F401
            import torch  # noqa: F401

            import raylm.train.loop  # noqa: F401
            return True

    start = time.perf_counter()
    actor = TrialLike.remote()
    ray.get(actor.ready.remote(), timeout=600)
    elapsed = time.perf_counter() - start
    ray.kill(actor)
    return elapsed


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _one_repeat(args, storage: str, i: int) -> dict[str, float]:
    from raylm.compress.objectives import compress_and_measure
    from raylm.data import decode_splits
    from raylm.data.decoded import sharing
    from raylm.train import build_trainer

    phases = {"actor_start_s": _actor_start_s()}
    decode_s, decoded = _timed(lambda: decode_splits(_config(args, storage, f"decode{i}")))
    phases["decode_s"] = decode_s
    with sharing(decoded):
        group_s, _ = _timed(lambda: build_trainer(_config(args, storage, f"group{i}"))[0].fit())
        cfg = _config(args, storage, f"local{i}")
        local_s, result = _timed(lambda: build_trainer(cfg, in_process=True)[0].fit())
        compress_s, _ = _timed(lambda: compress_and_measure(cfg, Path(result.best_checkpoints[0][0].path)))
    return phases | {"fit_worker_group_s": group_s, "fit_in_process_s": local_s, "compress_s": compress_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=180, help="digits per class (180: all 1,797)")
    args = parser.parse_args()

    from raylm.runtime import ensure_ray, quiet_data_progress

    os.environ["OMP_NUM_THREADS"] = "1"
    ensure_ray(num_cpus=2, log_to_driver=False)
    quiet_data_progress()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [_one_repeat(args, tmp, i) for i in range(args.repeats)]
    median = {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}
    line = {"benchmark": "tune_startup", "dataset": f"digits x{args.per_class}/class", "model": "seed_cnn",
            "epochs": 1, "cores": os.cpu_count(), "repeats": args.repeats, **median,
            "worker_group_overhead_s": round(median["fit_worker_group_s"] - median["fit_in_process_s"], 2),
            "runs": [{k: round(v, 2) for k, v in r.items()} for r in runs]}
    print(json.dumps(line))


if __name__ == "__main__":
    main()
