"""The baseline: a plain PyTorch (optionally DDP under torchrun) loop over in-memory tensors.

    python benchmarks/plain_loop.py --data /tmp/x.npz --model resnet_small --epochs 3
    torchrun --nproc_per_node 2 benchmarks/plain_loop.py --data /tmp/x.npz ...

Prints one JSON line: samples/s over the epochs after the first (warm-up).

``--augment KEY=VALUE,...`` (``augment.image`` fields, e.g. ``rotate_p=0.25,max_rotation=20``): the
loop also augments every batch, in line on its one thread, with raylm's augmentation function (the
one Ray Data's stage and the in-memory feed run), the baseline for runs that augment. Without it the
loop does no augmentation.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="npz with image (N,32,32,3) float32 and label")
    parser.add_argument("--model", default="resnet_small")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--augment", default="", help="augment.image overrides, KEY=VALUE,... (default: none)")
    args = parser.parse_args()

    distributed = "WORLD_SIZE" in os.environ
    rank, world = 0, 1
    if distributed:
        torch.distributed.init_process_group("gloo")
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from raylm.config import load_config
    from raylm.models import build_model

    data = np.load(args.data)
    images, labels = torch.from_numpy(data["image"]), torch.from_numpy(data["label"])
    # Same sharding as Ray Data's equal split: each rank gets len // world rows.
    per_rank = len(labels) // world
    images, labels = images[rank * per_rank : (rank + 1) * per_rank], labels[rank * per_rank : (rank + 1) * per_rank]
    augment_overrides = [f"augment.image.{kv}" for kv in args.augment.split(",") if kv]
    cfg = load_config(None, ["task.modality=image", f"model.name={args.model}", *augment_overrides])
    from raylm.train.memory_feed import epoch_augmenter

    augment = epoch_augmenter(cfg)  # None without --augment
    torch.manual_seed(0)
    model = build_model(cfg, int(data["num_classes"]))
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    timed_samples, timed_seconds = 0, 0.0
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(per_rank, generator=torch.Generator().manual_seed(epoch))
        started = time.perf_counter()
        for i in range(0, per_rank, args.batch_size):
            idx = order[i : i + args.batch_size]
            batch = images[idx]
            if augment is not None:
                batch = torch.from_numpy(augment({"image": batch.numpy(), "label": labels[idx].numpy()}, epoch)["image"])
            loss = F.cross_entropy(model(batch), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if epoch > 0:
            timed_seconds += time.perf_counter() - started
            timed_samples += per_rank
    if rank == 0:
        print(json.dumps({"samples_per_s": timed_samples * world / timed_seconds, "world": world,
                          "augment": args.augment or None}), flush=True)
    if distributed:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
