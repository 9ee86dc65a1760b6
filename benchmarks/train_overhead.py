"""raylm's Ray Train loop vs a plain PyTorch loop: same model, data, batch size and epochs.

    python benchmarks/train_overhead.py [--models seed_cnn,resnet_small] [--epochs 3] [--per-class 800] [--command-epochs 30]

Measures, in one run:
  * 1 worker: a plain single-process loop vs raylm with 1 worker (1 thread each; on the embedded Ray
    this benchmark starts, raylm trains that worker in this process: Train V2's local mode);
  * 2 workers: `torchrun --nproc_per_node 2` DDP vs raylm with 2 workers (1 thread each).
The plain loops read pre-decoded tensors from memory; raylm reads the same demo files (the
`shapes` set) through Ray Data, once streaming (decode every epoch on a spare CPU) and once with
`data.materialize=true` (decoded once, kept in the object store), the like-for-like comparison
with the in-memory baseline, and once with raylm's default (`data.materialize: auto`). Throughput is samples/s over the epochs after the first, taken from
raylm's own per-epoch metric. Prints one JSON line per model (both the issue's models by default).

Then the whole command (``--command-epochs``, 0 to skip): ``raylm train --config
jobs/configs/image.yaml`` with the issue's settings (one worker, batch 32, cosine, ``--command-epochs``
epochs on the digits demo) in a fresh process, its wall time against the plain loop's whole process
(same model, epochs, batch and lr, over the decoded train split from a file: decoding excluded) and
Ray's start (``ray.init`` of an embedded Ray in a fresh process); the goal is
``raylm_train_wall_s <= plain_wall_s + ray_start_s + 10``. One more JSON line.
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


def _decoded_demo(cfg, path: Path) -> None:
    """The exact samples raylm trains on, decoded once, for the plain loops."""
    from raylm.data import build_datasets

    data = build_datasets(cfg)
    batches = list(data.train.iter_batches(batch_size=1024, batch_format="numpy"))
    np.savez(path, image=np.concatenate([b["image"] for b in batches]),
             label=np.concatenate([b["label"] for b in batches]), num_classes=len(data.labels))


def _plain(npz: Path, args, nproc: int) -> float:
    base = ["benchmarks/plain_loop.py", "--data", str(npz), "--model", args.model,
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr)]
    cmd = [sys.executable, *base] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                        "--nproc_per_node", str(nproc), *base]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["samples_per_s"]


def _raylm(args, workers: int, storage: str, materialize: bool | None) -> float:
    """``materialize=None``: raylm's default (``data.materialize: auto``), what a user gets without tuning."""
    from raylm.config import load_config
    from raylm.train import fit

    cfg = load_config(None, [
        *_data_overrides(args), f"model.name={args.model}",
        *([f"data.materialize={materialize}"] if materialize is not None else []),
        f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
        f"train.num_workers={workers}", f"train.cpus_per_worker={1.0 if workers == 1 else 0.5}",
        f"train.storage_path={storage}", "train.log_every_n_steps=100000",
    ])
    history = fit(cfg).history
    warm = history[1:]
    return sum(h["train_samples_per_s"] for h in warm) / len(warm)


_COMMAND = ["--config", "jobs/configs/image.yaml", "train.lr=0.003", "train.lr_schedule=cosine",
            "train.batch_size=32", "train.num_workers=1"]  # issue 25's command


def _ray_start_s() -> float:
    """``ray.init`` of an embedded Ray in a fresh process, as ``raylm train`` starts one."""
    code = ("import time; t = time.perf_counter(); from raylm.runtime import ensure_ray; "
            "ensure_ray(log_to_driver=False); print(time.perf_counter() - t)")
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def command_wall(epochs: int) -> dict:
    """The whole ``raylm train`` command vs the plain loop's whole process + Ray's start + 10 s."""
    from raylm.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(_COMMAND[1], [*_COMMAND[2:], f"train.epochs={epochs}", f"train.storage_path={tmp}"])
        npz = Path(tmp) / "digits.npz"
        load_start = round(os.getloadavg()[0], 2)
        _decoded_demo(cfg, npz)
        import ray

        ray.shutdown()  # the Ray the decode started: each process below has its own
        env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        started = time.perf_counter()
        subprocess.run([sys.executable, "benchmarks/plain_loop.py", "--data", str(npz), "--model", cfg.model.name,
                        "--epochs", str(epochs), "--batch-size", "32", "--lr", "0.003"],
                       cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        plain = time.perf_counter() - started
        ray_start = _ray_start_s()
        started = time.perf_counter()
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        env.pop("RAY_ADDRESS", None)
        subprocess.run([sys.executable, "-m", "raylm.cli", "train", *_COMMAND, f"train.epochs={epochs}",
                        f"train.storage_path={tmp}", "train.name=command"],
                       cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        raylm = time.perf_counter() - started
    return {"benchmark": "train_command_wall", "command": "raylm train " + " ".join(_COMMAND) + f" train.epochs={epochs}",
            "raylm_train_wall_s": round(raylm, 1), "plain_wall_s": round(plain, 1), "ray_start_s": round(ray_start, 1),
            "bound_s": round(plain + ray_start + 10, 1), "goal_met": raylm <= plain + ray_start + 10,
            "load_avg_start": load_start, "load_avg_end": round(os.getloadavg()[0], 2)}


def _data_overrides(args) -> list[str]:
    return ["task.modality=image", "data.name=shapes", f"data.samples_per_class={args.per_class}"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="seed_cnn,resnet_small", help="comma-separated; one JSON line each")
    parser.add_argument("--command-epochs", type=int, default=30, help="the whole-command check's epochs (0: skip)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--per-class", type=int, default=800, help="shapes samples per class (6 classes)")
    args = parser.parse_args()

    from raylm.runtime import ensure_ray

    import ray

    os.environ["OMP_NUM_THREADS"] = "1"
    ensure_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    for model in args.models.split(","):
        args.model = model
        _one_model(args)
    ray.shutdown()  # the command's check starts its own Rays, in fresh processes
    if args.command_epochs:
        print(json.dumps(command_wall(args.command_epochs)), flush=True)


def _one_model(args) -> None:
    from raylm.config import load_config

    load_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "train.npz"
        _decoded_demo(load_config(None, [*_data_overrides(args), "model.name=seed_cnn"]), npz)
        # Ray Data's equal split: each raylm worker sees len // workers rows, as plain_loop does.
        figures = {"plain_1w": _plain(npz, args, 1),
                   "raylm_1w_default": _raylm(args, 1, tmp, None),
                   "raylm_1w_materialized": _raylm(args, 1, tmp, True),
                   "raylm_1w_streaming": _raylm(args, 1, tmp, False),
                   "torchrun_2w": _plain(npz, args, 2),
                   "raylm_2w_default": _raylm(args, 2, tmp, None),
                   "raylm_2w_materialized": _raylm(args, 2, tmp, True),
                   "raylm_2w_streaming": _raylm(args, 2, tmp, False)}
    line = {"benchmark": "train_overhead", "model": args.model, "dataset": f"shapes x{args.per_class}/class",
            "epochs": args.epochs, "batch_size": args.batch_size, "cores": os.cpu_count()}
    line |= {f"{k}_samples_per_s": round(v, 1) for k, v in figures.items()}
    for workers, base in (("1w", "plain_1w"), ("2w", "torchrun_2w")):
        for mode in ("default", "materialized", "streaming"):
            line[f"ratio_{workers}_{mode}"] = round(figures[f"raylm_{workers}_{mode}"] / figures[base], 3)
    line |= {"load_avg_start": load_start, "load_avg_end": round(os.getloadavg()[0], 2)}
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
