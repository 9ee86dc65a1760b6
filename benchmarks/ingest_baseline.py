"""ingest.py's in-memory baseline: the streamed run's model, optimizer, batch size and thread count
fed from a decoded in-memory slice, one warm-up epoch and then ``--repeats`` timed epochs.

    OMP_NUM_THREADS=1 python benchmarks/ingest_baseline.py --data slice.npz --repeats 5

Prints one JSON line: each timed epoch's samples/s (wall clock) and samples per CPU-second of this
process (``process_time``: what the loop would do with a whole core to itself; apart from the wall
rate only when something else took the core).

Why repeats: the slice is ~1 s of training on a quiet machine, so one epoch in a fresh process (the
old baseline: plain_loop.py --epochs 2, the second timed) moved 2,606-4,102 samples/s between runs;
ingest.py takes the median of every timed epoch before and after the streamed epoch.
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
    parser.add_argument("--data", required=True, help="npz with image (N,32,32,3) float32, label and num_classes")
    parser.add_argument("--model", default="seed_cnn")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs after the warm-up one")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    # The streamed trainer is a Ray Train worker with 1 CPU: Ray sets OMP_NUM_THREADS=1 for it.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from raylm.config import load_config
    from raylm.models import build_model

    data = np.load(args.data)
    images, labels = torch.from_numpy(data["image"]), torch.from_numpy(data["label"])
    cfg = load_config(None, ["task.modality=image", f"model.name={args.model}"])
    torch.manual_seed(0)
    model = build_model(cfg, int(data["num_classes"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    rows, wall, cpu = len(labels), [], []
    for epoch in range(1 + args.repeats):  # epoch 0 warms up: the first optimizer step imports torch._dynamo
        model.train()
        order = torch.randperm(rows, generator=torch.Generator().manual_seed(epoch))
        started, cpu_started = time.perf_counter(), time.process_time()
        for i in range(0, rows, args.batch_size):
            idx = order[i : i + args.batch_size]
            loss = F.cross_entropy(model(images[idx]).float(), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()  # as the trainer does each step
        if epoch > 0:
            wall.append(rows / (time.perf_counter() - started))
            cpu.append(rows / max(time.process_time() - cpu_started, 1e-9))
    print(json.dumps({"rows": rows, "samples_per_s": [round(v, 1) for v in wall],
                      "samples_per_cpu_s": [round(v, 1) for v in cpu], "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
