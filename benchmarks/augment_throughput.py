"""Images/s of augmentation on 32x32x3 float images, on one core, in one run:

- ``article``: the seed article's per-image ``data_augmentation`` (rotation + crop), copied below;
- ``raylm_same_ops``: raylm's batched policy doing the same two ops (rotation up to 30 degrees, a
  crop of a quarter of the area; raylm also resizes the crop back to 32x32, the article does not);
- ``raylm_full``: rotation, crop, flip, brightness/contrast and cutout;
- ``torchvision_*``: torchvision v2 doing the same ops per image (the usual Dataset.__getitem__
  use) when torchvision imports here, or in the interpreter given by --torchvision-python (a venv
  with a torch/torchvision pair; PyPI's torchvision does not import beside torch 2.13.0+cpu);
- ``ray_data_*``: end to end through Ray Data with 2 CPU workers (map_batches, 1 CPU per task).

Prints ONE JSON line; ratios are against the article's function measured in the same run.

    python benchmarks/augment_throughput.py [--torchvision-python /tmp/tv-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np

SIZE, BATCH = 32, 64


# --- the seed article's function, verbatim (the article's text lost its indentation) ---
def data_augmentation(image):
    # 随机旋转
    angle = np.random.uniform(-30, 30)
    M = cv2.getRotationMatrix2D((image.shape[1]//2, image.shape[0]//2), angle, 1.0)
    rotated = cv2.warpAffine(image, M, (image.shape[1], image.shape[0]))
    # 随机裁剪
    x_offset = np.random.randint(0, image.shape[1]//4)
    y_offset = np.random.randint(0, image.shape[0]//4)
    cropped = rotated[y_offset:y_offset+image.shape[0]//2, x_offset:x_offset+image.shape[1]//2]
    return cropped
# --- end of the article's function ---


SAME_OPS = dict(rotate_p=1.0, max_rotation=30, crop_p=1.0, crop_scale_min=0.25, crop_scale_max=0.25)
FULL = SAME_OPS | dict(hflip_p=0.5, brightness=0.2, contrast=0.2, cutout_p=0.5, cutout_size=0.25)

_TORCHVISION = r"""
import json, sys, time, numpy as np, torch
torch.set_num_threads(1)
from torchvision.transforms import v2
n, size, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
images = torch.from_numpy(np.random.default_rng(0).random((n, 3, size, size), dtype=np.float32))
same = v2.Compose([v2.RandomRotation(30), v2.RandomResizedCrop(size, scale=(0.25, 0.25), ratio=(1.0, 1.0), antialias=False)])
full = v2.Compose([same, v2.RandomHorizontalFlip(0.5), v2.ColorJitter(brightness=0.2, contrast=0.2),
                   v2.RandomErasing(p=0.5, scale=(0.0625, 0.0625), ratio=(1.0, 1.0), value=0)])
out = {"torchvision_version": __import__("torchvision").__version__, "torch_version": torch.__version__}
for name, t in (("same_ops", same), ("full", full)):
    for img in images[:64]:
        t(img)
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for img in images:
            t(img)
        best = max(best, n / (time.perf_counter() - started))
    out[name] = best
print(json.dumps(out))
"""


def best_rate(fn, images: np.ndarray, repeats: int) -> float:
    fn(images[:BATCH])  # warm up
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        fn(images)
        best = max(best, len(images) / (time.perf_counter() - started))
    return best


def article_all(images: np.ndarray) -> None:
    for image in images:
        data_augmentation(image)


def raylm_all(policy):
    from raylm.data.augment import augment_batch

    def run(images: np.ndarray) -> None:
        for start in range(0, len(images), BATCH):
            augment_batch({"image": images[start:start + BATCH]}, modality="image", policy=policy, seed=0, epoch=0)

    return run


def torchvision_rates(python: str | None, n: int, repeats: int) -> dict:
    command = [python or sys.executable, "-c", _TORCHVISION, str(n), str(SIZE), str(repeats)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _article_udf(batch: dict) -> dict:
    return {"x": np.stack([data_augmentation(i) for i in batch["data"]])}


def _raylm_udf(batch: dict, policy) -> dict:
    from raylm.data.augment import _augment_udf

    return _augment_udf({"image": batch["data"]}, run_id=None, modality="image", policy=policy, seed=0)


def ray_data_rates(images: np.ndarray, policy, repeats: int) -> dict:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    source = ray.data.from_numpy(images).materialize()  # in the object store: only augmentation is timed
    rates = {}
    for name, fn, kwargs in (("article", _article_udf, None), ("raylm", _raylm_udf, {"policy": policy})):
        best = 0.0
        for _ in range(repeats):
            started = time.perf_counter()
            count = 0
            ds = source.map_batches(fn, batch_size=BATCH, batch_format="numpy", num_cpus=1, concurrency=2, fn_kwargs=kwargs)
            for batch in ds.iter_batches(batch_size=1024, batch_format="numpy"):
                count += len(batch["x"] if "x" in batch else batch["image"])
            best = max(best, count / (time.perf_counter() - started))
        rates[name] = best
    ray.shutdown()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3, help="best of N (the machine is shared)")
    parser.add_argument("--torchvision-python", default=os.environ.get("RAYLM_TORCHVISION_PYTHON"),
                        help="an interpreter with torchvision (default: this one)")
    parser.add_argument("--ray-images", type=int, default=16384)
    args = parser.parse_args()

    import torch

    from raylm.config import ImageAugmentConfig

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    np.random.seed(0)
    images = np.random.default_rng(0).random((args.images, SIZE, SIZE, 3), dtype=np.float32)
    same, full = ImageAugmentConfig(**SAME_OPS), ImageAugmentConfig(**FULL)

    result: dict = {"benchmark": "augment_throughput", "image": f"{SIZE}x{SIZE}x3 float32", "batch": BATCH,
                    "images": args.images, "threads": 1}
    result["article_per_s"] = round(best_rate(article_all, images, args.repeats))
    result["raylm_same_ops_per_s"] = round(best_rate(raylm_all(same), images, args.repeats))
    result["raylm_full_per_s"] = round(best_rate(raylm_all(full), images, args.repeats))
    result["raylm_same_ops_vs_article"] = round(result["raylm_same_ops_per_s"] / result["article_per_s"], 2)
    result["raylm_full_vs_article"] = round(result["raylm_full_per_s"] / result["article_per_s"], 2)

    tv = torchvision_rates(args.torchvision_python, min(args.images, 4096), args.repeats)
    if "error" in tv:
        result["torchvision"] = f"unavailable: {tv['error']}"
    else:
        result["torchvision"] = f"{tv['torchvision_version']} (torch {tv['torch_version']})"
        result["torchvision_same_ops_per_s"] = round(tv["same_ops"])
        result["torchvision_full_per_s"] = round(tv["full"])
        result["raylm_same_ops_vs_torchvision"] = round(result["raylm_same_ops_per_s"] / tv["same_ops"], 2)
        result["raylm_full_vs_torchvision"] = round(result["raylm_full_per_s"] / tv["full"], 2)

    ray_rates = ray_data_rates(images[: args.ray_images] if args.ray_images <= len(images) else
                               np.random.default_rng(1).random((args.ray_images, SIZE, SIZE, 3), dtype=np.float32),
                               full, args.repeats)
    result["ray_data_2cpu_article_per_s"] = round(ray_rates["article"])
    result["ray_data_2cpu_raylm_full_per_s"] = round(ray_rates["raylm"])
    result["ray_data_raylm_full_vs_article"] = round(ray_rates["raylm"] / ray_rates["article"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
