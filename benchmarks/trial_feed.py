"""A sweep trial's training epoch, fed three ways, interleaved in one process (issue 25, item 5).

    python benchmarks/trial_feed.py [--config jobs/configs/image_tune.yaml] [--rounds 3] [KEY=VALUE ...]

On the sweep's kept (materialized) train split, with its model, batch size and the trials' typical
augmentation (``sweep_efficiency.typical_augmentation``), one thread, each round trains one epoch:

  * ``plain``: the plain loop's way, indexing in-memory tensors and augmenting in line;
  * ``ray_data``: what a trial did before: ``iter_torch_batches`` over the kept split with Ray Data's
    augmentation stage and the local shuffle buffer (``raylm/train/loop.py``'s streamed path);
  * ``memory``: what a one-worker trial does now: ``raylm/train/memory_feed.py``.

Rounds interleave the three so that load changes hit all of them; the first round warms up and is
not counted. Prints one JSON line: samples/s of each and the ratios to ``plain``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="jobs/configs/image_tune.yaml")
    parser.add_argument("--rounds", type=int, default=3, help="rounds after the warm-up round")
    parser.add_argument("overrides", nargs="*", help="config overrides, KEY=VALUE")
    args = parser.parse_args()
    load_start = round(os.getloadavg()[0], 2)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    from sweep_efficiency import typical_augmentation

    from raylm.config import load_config
    from raylm.data import build_datasets, decode_splits
    from raylm.data.augment import set_epoch
    from raylm.data.decoded import sharing
    from raylm.data.shards import local_shuffle
    from raylm.models import build_model
    from raylm.runtime import ensure_ray
    from raylm.train.memory_feed import MemoryFeed, epoch_augmenter, read_columns

    ensure_ray(log_to_driver=False)
    base = load_config(args.config, ["data.materialize=true", *args.overrides])
    augment = typical_augmentation(base)
    cfg = base.override({f"augment.image.{k}": float(v) if "." in v else int(v)
                         for k, v in (kv.split("=") for kv in augment.split(","))})
    decoded = decode_splits(cfg)
    with sharing(decoded):
        data = build_datasets(cfg)  # the kept split with the augmentation stage, as a trial built it
    columns = read_columns(decoded.train)
    augmenter = epoch_augmenter(cfg)
    memory = MemoryFeed(columns, read_columns(decoded.validation), batch_size=cfg.train.batch_size,
                        seed=cfg.train.seed, augment=augmenter)
    images, labels = torch.from_numpy(columns["image"]), torch.from_numpy(columns["label"])
    model = build_model(cfg, len(decoded.labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)

    def step(batch) -> None:
        loss = F.cross_entropy(model(batch["image"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def plain(epoch: int):
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(order), cfg.train.batch_size):
            idx = order[i:i + cfg.train.batch_size]
            image = torch.from_numpy(augmenter({"image": images[idx].numpy(), "label": labels[idx].numpy()}, epoch)["image"])
            yield {"image": image, "label": labels[idx]}

    def ray_data(epoch: int):
        set_epoch(data.augment_run_id, epoch)
        return data.train.iter_torch_batches(batch_size=cfg.train.batch_size, prefetch_batches=2,
                                             **local_shuffle(cfg, epoch=epoch, rank=0, world=1))

    feeds = {"plain": plain, "ray_data": ray_data, "memory": memory.batches}
    seconds = {name: 0.0 for name in feeds}
    samples = {name: 0 for name in feeds}
    model.train()
    for round_ in range(args.rounds + 1):
        for name, feed in feeds.items():
            started, seen = time.perf_counter(), 0
            for batch in feed(round_):
                step(batch)
                seen += len(batch["label"])
            if round_ > 0:  # round 0 warms up (imports, the first pipeline, torch._dynamo)
                seconds[name] += time.perf_counter() - started
                samples[name] += seen
    rates = {name: samples[name] / seconds[name] for name in feeds}
    line = {"benchmark": "trial_feed", "config": args.config, "model": cfg.model.name, "batch_size": cfg.train.batch_size,
            "train_samples": len(labels), "augment": augment, "rounds": args.rounds,
            **{f"{name}_samples_per_s": round(rate, 1) for name, rate in rates.items()},
            "ratio_ray_data": round(rates["ray_data"] / rates["plain"], 3),
            "ratio_memory": round(rates["memory"] / rates["plain"], 3),
            "load_avg_start": load_start, "load_avg_end": round(os.getloadavg()[0], 2)}
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
