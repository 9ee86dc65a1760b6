"""What ``tune.measure_on`` costs, and what it changes in the rows: the same tiny sweep with
``tune.measure_on=trial`` (each trial times itself, as before) and ``driver`` (one probe actor on
the driver's node times every trial's artifact and dense model), in alternation, in one run.

    python benchmarks/measure_on.py [--trials 3] [--rounds 2] [--per-class 100]

Prints one JSON line: sweep wall seconds per mode (median of ``--rounds``), their ratio
(driver / trial), the rows' measured-on places, and for ``driver`` the probe's p50 next to the
trial's own (``trial_latency_ms``). On one machine both places are the same hardware: the figure
is the probe's cost, not a cross-hardware difference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time


def _config(args, storage: str, name: str, place: str):
    from raylm.config import load_config

    lrs = [0.003 * 0.7 ** i for i in range(args.trials)]
    return load_config(None, [
        "task.modality=image", "data.name=shapes", f"data.samples_per_class={args.per_class}",
        "model.name=seed_cnn", "train.epochs=1", "train.num_workers=1", "train.cpus_per_worker=0.5",
        f"train.storage_path={storage}", f"train.name={name}", "compress.latency_runs=20", "compress.latency_warmup=3",
        "compress.quantize.mode=dynamic", f"tune.space={{train.lr: {{grid: {json.dumps(lrs)}}}}}",
        "tune.objectives=[accuracy, latency_ms]", "tune.num_samples=1", "tune.max_concurrent_trials=1",
        "tune.trial_cpus=0.25", "tune.export=none", f"tune.measure_on={place}",
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two modes")
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()

    from raylm.runtime import ensure_ray
    from raylm.tune import sweep

    ensure_ray(num_cpus=2, log_to_driver=False)
    walls: dict[str, list[float]] = {"trial": [], "driver": []}
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for place in (("trial", "driver") if i % 2 == 0 else ("driver", "trial")):  # neither always first
                start = time.perf_counter()
                result = sweep(_config(args, tmp, f"{place}-{i}", place), verbose=False)
                walls[place].append(time.perf_counter() - start)
                rows[place] = result.rows
    trial_wall, driver_wall = statistics.median(walls["trial"]), statistics.median(walls["driver"])
    probed = rows["driver"]
    print(json.dumps({
        "benchmark": "measure_on", "cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1),
        "trials": args.trials, "rounds": args.rounds,
        "sweep_wall_s": {"trial": [round(w, 1) for w in walls["trial"]], "driver": [round(w, 1) for w in walls["driver"]]},
        "ratio_driver_over_trial": round(driver_wall / trial_wall, 3),
        "places": {p: sorted({(r.get("measured_on") or {}).get("place") for r in rs}) for p, rs in rows.items()},
        "driver_rows_p50_ms": [round(r["latency_ms"], 3) for r in probed],
        "driver_rows_trial_p50_ms": [round(r["trial_latency_ms"], 3) for r in probed],
        "driver_rows_dense_p50_ms": [round(r["dense_latency_ms"], 3) for r in probed],
    }))


if __name__ == "__main__":
    main()
