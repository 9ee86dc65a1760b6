"""Fault injection, measured: what a killed Train worker, a killed Serve replica, a SIGKILLed sweep
driver and a full disk cost a run.

    python benchmarks/faults.py [--epochs 6] [--concurrency 4] [--only worker_kill replica_kill driver_sigkill]

On one embedded 2-CPU Ray, with the tests' tiny image data (tests/conftest.py) and fault helpers
(tests/helpers/faults.py), in one run:
  * worker kill: the same seeded run trained unkilled (the baseline) and with one Ray Train worker
    SIGKILLed after its first checkpoint (train.max_failures=1): epochs redone (goal <= 1) and the
    validation accuracy of each (goal: within 1 point);
  * replica kill: steady load on an app with two replicas, one SIGKILLed: requests failed
    (goal <= 1 %), the slowest answer, seconds until the replica was replaced;
  * driver SIGKILL: a 6-trial sweep's driver killed after its first finished trial, then
    `raylm tune --resume`: finished trials rerun (goal 0), CPUs still reserved after the kill;
  * full disk: a checkpoint rewritten under RLIMIT_FSIZE: bytes of the previous one lost (goal 0).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker_kill(tiny, epochs: int) -> dict:
    from tests.helpers.faults import WorkerKiller, epochs_redone

    from raylm.train import fit

    common = (f"train.epochs={epochs}", "train.batch_size=4", "train.seed=3", "train.max_failures=1")
    unkilled = fit(tiny("image", *common, "train.name=unkilled"))
    cfg = tiny("image", *common, "train.name=killed")
    killer = WorkerKiller(cfg.run_dir / "train", after_epoch=1)
    killer.start()
    killed = fit(cfg)
    killer.join(timeout=5)
    kill = killer.killed[0] if killer.killed else None
    return {"worker_kills": len(killer.killed),
            "epochs_redone_per_kill": epochs_redone(killed.history, kill) if kill else None,
            "accuracy_unkilled": unkilled.metrics["val_accuracy"], "accuracy_killed": killed.metrics["val_accuracy"],
            "accuracy_diff_pts": round(100 * (killed.metrics["val_accuracy"] - unkilled.metrics["val_accuracy"]), 2)}


def replica_kill(tiny, root: Path, concurrency: int) -> dict:
    from tests.helpers.faults import SteadyLoad, alive_actor_pids, running_replicas, wait_for
    from ray import serve
    from tests.helpers.ports import free_port as _free_port
    from tests.helpers.serving import FAST, _b64, _checkpoint, _png

    from raylm.compress import compress
    from raylm.serve import build_app, load_serve_config

    cfg = tiny("image", "task.labels=[horizontal,vertical]", "train.name=served", *FAST)
    artifact = compress(cfg, _checkpoint(cfg, ["horizontal", "vertical"]), verbose=False)["artifact"]
    port, timeout_s = _free_port(), 20
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": timeout_s})
    serving = load_serve_config(None, ["serve.min_replicas=2", "serve.max_replicas=2", "serve.replica_cpus=0.25",
                                       "serve.graceful_shutdown_timeout_s=1", "serve.health_check_period_s=1"])
    serve.run(build_app([artifact], serving), name="bench", route_prefix="/bench")
    wait_for(lambda: running_replicas("bench") == 2, 120, "two replicas")
    load = SteadyLoad(f"http://127.0.0.1:{port}/bench/predict", {"image": _b64(_png("horizontal"))}, concurrency, timeout_s)
    load.start()
    wait_for(lambda: len(load.answers) >= 100, 120, "100 answers")
    victims = alive_actor_pids("ServeReplica:bench:TierServer")
    os.kill(victims[0], signal.SIGKILL)
    killed_at = time.time()
    wait_for(lambda: victims[0] not in alive_actor_pids("ServeReplica:bench:TierServer")
             and running_replicas("bench") == 2, 180, "the replacement")
    replaced_s = time.time() - killed_at
    time.sleep(5)
    load.stop.set()
    load.join(timeout=timeout_s + 10)
    serve.shutdown()
    failed = load.failed()
    return {"requests": len(load.answers), "requests_failed": len(failed),
            "requests_failed_pct": round(100 * len(failed) / max(len(load.answers), 1), 3),
            "failed_statuses": sorted({str(status) for _, status, _ in failed}),
            "slowest_answer_s": round(max(s for _, _, s in load.answers), 2), "replica_replaced_s": round(replaced_s, 1)}


def driver_sigkill(tiny, root: Path) -> dict:
    import ray
    from tests.helpers.faults import raylm_cli, wait_for
    from tests.helpers.tuning import _SWEEP, _finished_trials

    total = ray.cluster_resources()["CPU"]
    cfg = tiny("image", *_SWEEP, "train.epochs=8", "tune.space={train.lr: {grid: [0.01, 0.005, 0.002]}}",
               "tune.num_samples=2", "tune.export=none", "tune.scheduler=fifo", "train.name=sweep")
    tune_dir, trials = cfg.run_dir / "tune", cfg.run_dir / "tune" / "trials"
    driver = raylm_cli("tune", config=cfg, config_path=root / "sweep.yaml", stderr=subprocess.DEVNULL)
    wait_for(lambda: _finished_trials(tune_dir) or driver.poll() is not None, 300, "a finished trial")
    killed_mid_sweep = driver.poll() is None
    driver.kill()
    driver.wait(timeout=30)
    finished = {t: (trials / t / "raylm_trial.json").stat().st_mtime_ns for t in _finished_trials(tune_dir)}
    killed_at = time.monotonic()
    wait_for(lambda: ray.available_resources().get("CPU", 0) >= total - 1e-6, 120, "CPUs freed")
    freed_s = time.monotonic() - killed_at
    resumed = raylm_cli("tune", "--resume", str(cfg.run_dir), stderr=subprocess.DEVNULL)
    resumed.wait(timeout=900)
    rerun = sum((trials / t / "raylm_trial.json").stat().st_mtime_ns != m for t, m in finished.items())
    return {"killed_mid_sweep": killed_mid_sweep, "trials": 6, "trials_finished_before_kill": len(finished), "trials_rerun_after_driver_sigkill": rerun,
            "resume_exit_code": resumed.returncode, "cpus_freed_after_s": round(freed_s, 1),
            "cpus_reserved_after_resume": round(total - ray.available_resources().get("CPU", 0), 3)}


def full_disk(root: Path) -> dict:
    from tests.integration.test_faults import _good_checkpoint, _write_over

    final = root / "disk" / "checkpoint_000001"
    before = _good_checkpoint(final)
    proc = _write_over(final, limit=4096)
    after = {p.name: p.read_bytes() for p in final.iterdir()}
    lost = sum(len(data) for name, data in before.items() if after.get(name) != data)
    return {"full_disk_error_names_path": str(final) in proc.stderr, "bytes_lost": lost}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=["worker_kill", "replica_kill", "driver_sigkill"],
                        help="scenarios to run (the full-disk one always runs: it takes a second)")
    args = parser.parse_args()

    from tests.conftest import _easy_images
    from tests.helpers.configs import tiny_config_in

    from raylm.runtime import ensure_ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_root = {"image": _easy_images(root / "images")}

        def tiny(modality: str, *overrides: str):
            return tiny_config_in(root, data_root, modality, *overrides)

        figures = {"full_disk": full_disk(root)}
        ensure_ray(num_cpus=2, configure_logging=False)
        for name, measure in (("worker_kill", lambda: worker_kill(tiny, args.epochs)),
                              ("replica_kill", lambda: replica_kill(tiny, root, args.concurrency)),
                              ("driver_sigkill", lambda: driver_sigkill(tiny, root))):
            if name not in args.only:
                continue
            figures[name] = measure()
            print(f"faults: {name} {json.dumps(figures[name])}", file=sys.stderr, flush=True)  # progress
    print(json.dumps({"benchmark": "faults"} | figures))


if __name__ == "__main__":
    main()
