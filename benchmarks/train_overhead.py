"""raylm's Ray Train loop vs a plain PyTorch loop: same model, data, batch size and epochs.

    python benchmarks/train_overhead.py [--model resnet_small] [--epochs 3] [--per-class 800]

Measures, in one run:
  * 1 worker: a plain single-process loop vs raylm's TorchTrainer with 1 worker (1 thread each);
  * 2 workers: `torchrun --nproc_per_node 2` DDP vs raylm with 2 workers (1 thread each).
The plain loops read pre-decoded tensors from memory; raylm reads the same demo files (the
`shapes` set) through Ray Data, once streaming (decode every epoch on a spare CPU) and once with
`data.materialize=true` (decoded once, kept in the object store), the like-for-like comparison
with the in-memory baseline, and once with raylm's default (`data.materialize: auto`). Throughput is samples/s over the epochs after the first, taken from
raylm's own per-epoch metric. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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


def _data_overrides(args) -> list[str]:
    return ["task.modality=image", "data.name=shapes", f"data.samples_per_class={args.per_class}"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet_small")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--per-class", type=int, default=800, help="shapes samples per class (6 classes)")
    args = parser.parse_args()

    from raylm.config import load_config
    from raylm.runtime import ensure_ray

    os.environ["OMP_NUM_THREADS"] = "1"
    ensure_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
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
    print(json.dumps(line))


if __name__ == "__main__":
    main()
