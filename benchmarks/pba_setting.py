"""Where does augmentation help at all? (a) none vs (d) uniform on pba.py's reduced image split, no Ray.

    python benchmarks/pba_setting.py [--data digits] [--fractions 0.05 0.1] [--epochs 40 100]
                                     [--models seed_cnn resnet_small] [--magnitudes 0.25 0.5] [--seeds 0 1 2]
                                     [--png DIR]

Before pba.py spends minutes per arm, this picks the setting in which its comparison can say
something: if augmentation at a fixed magnitude does not beat no augmentation, a learned schedule
has nothing to learn. Each cell is a plain torch loop with the training loop's optimizer and lr
curve (AdamW, cosine, batch 32, raylm/train/loop.py) over pba.py's split (``reduced_split``), fed
the same augmentation function the sweep's trials use (``raylm.data.augment.augment_batch``: same
draws per seed, epoch and sample), scored on the whole validation split after the last epoch.
``--png``: a grid of augmented training samples beside validation samples, to look at.
Prints one JSON line per (fraction, epochs, model, magnitude): mean and per-seed accuracy, and the load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _arrays(folder: Path, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    from raylm.data.images import preprocess_image

    images, targets = [], []
    for index, label in enumerate(labels):
        for path in sorted((folder / label).iterdir()):
            images.append(preprocess_image(cv2.imread(str(path)), 32))
            targets.append(index)
    return np.stack(images), np.asarray(targets, dtype=np.int64)


def train_once(model_name: str, train: tuple, val: tuple, *, policy, epochs: int, seed: int, lr: float = 0.003,
               batch_size: int = 32) -> float:
    import torch
    import torch.nn.functional as F

    from raylm.data.augment import augment_batch
    from raylm.models.image import ResNetSmall, SeedCNN

    torch.manual_seed(seed)
    classes = int(train[1].max()) + 1
    model = SeedCNN(classes) if model_name == "seed_cnn" else ResNetSmall(classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    x, y = train
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        order = np.random.default_rng(seed * 1000 + epoch).permutation(len(y))
        model.train()
        for start in range(0, len(y), batch_size):
            rows = order[start:start + batch_size]
            batch = {"image": x[rows], "label": y[rows]}
            if policy is not None:
                batch = augment_batch(batch, modality="image", policy=policy, seed=seed, epoch=epoch)
            loss = F.cross_entropy(model(torch.as_tensor(batch["image"])), torch.as_tensor(batch["label"]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(torch.as_tensor(val[0])).argmax(-1).numpy()
    return float((predicted == val[1]).mean())


def policy_at(magnitude: float, data: str, base: dict, only: list[str] | None = None):
    from benchmarks.pba import uniform_policy
    from raylm.config import ImageAugmentConfig

    values = {k.removeprefix("augment.image."): v for k, v in uniform_policy(magnitude, data).items() if k.startswith("augment.image.")}
    if only:  # the other ops off (a rotation needs both its probability and its angle)
        values = {k: v for k, v in values.items() if k in only or (k == "max_rotation" and "rotate_p" in only)}
    return ImageAugmentConfig(**(base | values))


def write_png(path: Path, train: tuple, val: tuple, policy, seed: int = 0) -> None:
    """Rows: 8 validation images, then the same 8 training images clean and at 3 epochs' augmentation."""
    import cv2

    from raylm.data.augment import augment_batch

    rows = [val[0][:8], train[0][:8]]
    for epoch in range(3):
        rows.append(augment_batch({"image": train[0][:8]}, modality="image", policy=policy, seed=seed, epoch=epoch)["image"])
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    grid = cv2.resize(grid, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), (grid[..., ::-1] * 255).astype(np.uint8))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--epochs", type=int, nargs="+", default=[40, 100])
    parser.add_argument("--models", nargs="+", default=["seed_cnn"])
    parser.add_argument("--magnitudes", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--base", default="{}", help="JSON: fixed augment.image fields (e.g. crop_scale_min)")
    parser.add_argument("--per-class", type=int, default=None, help="the demo's samples per class")
    parser.add_argument("--only", nargs="+", default=None, help="augment.image fields of the space to keep on")
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from benchmarks.pba import reduced_split

    torch.set_num_threads(1)
    base = json.loads(args.base)
    with tempfile.TemporaryDirectory(prefix="raylm-pba-setting-") as tmp:
        for fraction in args.fractions:
            work = Path(tmp) / f"f{fraction}"
            train_dir, val_dir = reduced_split(Path("~/.cache/raylm").expanduser(), fraction, work, args.data, args.per_class)
            labels = sorted(p.name for p in train_dir.iterdir())
            train, val = _arrays(train_dir, labels), _arrays(val_dir, labels)
            if args.png is not None:
                args.png.mkdir(parents=True, exist_ok=True)
                for magnitude in args.magnitudes:
                    write_png(args.png / f"{args.data}-f{fraction}-m{magnitude}.png", train, val, policy_at(magnitude, args.data, base, args.only))
            for model_name in args.models:
                for epochs in args.epochs:
                    for magnitude in args.magnitudes:
                        policy = policy_at(magnitude, args.data, base, args.only) if magnitude > 0 else None
                        started = time.perf_counter()
                        scores = [train_once(model_name, train, val, policy=policy, epochs=epochs, seed=s) for s in args.seeds]
                        print(json.dumps({"bench": "pba_setting", "data": args.data, "fraction": fraction, "train_rows": len(train[1]),
                                          "val_rows": len(val[1]), "per_class": args.per_class, "model": model_name, "epochs": epochs, "magnitude": magnitude,
                                          "base": base, "only": args.only, "mean": round(float(np.mean(scores)), 4),
                                          "per_seed": [round(s, 4) for s in scores], "wall_s": round(time.perf_counter() - started, 1),
                                          "load_avg": " ".join(f"{v:.1f}" for v in os.getloadavg())}), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
