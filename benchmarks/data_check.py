"""The data check on a user's image folder: time to the first error, and what the whole check costs.

    python benchmarks/data_check.py [--per-class 200]

Generates a class folder of PNG/JPEG images (mixed sizes, nested sub-folders) with one corrupt
file, starts Ray, and measures, in one run:
  * first_error_s: from Ray being up to the DataError naming the corrupt file (data.on_bad_input=fail;
    the goal is <= 10 s; before the check, a run died in training after minutes, no file named);
  * check_s: the whole check in skip mode (every file decoded once, the report written);
  * epoch_decode_s: one pass of training's decode pipeline over the same files (the baseline: what
    one epoch of reading and decoding costs), and check_s / epoch_decode_s.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=200)
    args = parser.parse_args()

    from tests.helpers.messy import messy_images

    from raylm.config import load_config
    from raylm.data import build_datasets
    from raylm.data.check import DataError
    from raylm.runtime import ensure_ray, quiet_data_progress

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = messy_images(tmp / "images", per_class=args.per_class)
        files = sum(data.classes.values()) + len(data.bad)

        def config(name: str, *overrides: str):
            return load_config(None, ["task.modality=image", "model.name=seed_cnn", f"data.path={data.path}",
                                      f"data.cache_dir={tmp / name}", f"train.storage_path={tmp / 'runs'}",
                                      f"train.name={name}", *overrides])

        started = time.perf_counter()
        ensure_ray()
        quiet_data_progress()
        ray_start_s = time.perf_counter() - started

        started = time.perf_counter()
        try:
            build_datasets(config("fail", "data.on_bad_input=fail"))
            first_error, first_error_s = None, None
        except DataError as err:
            first_error, first_error_s = str(err), time.perf_counter() - started

        started = time.perf_counter()
        datasets = build_datasets(config("skip"))
        check_s = time.perf_counter() - started

        started = time.perf_counter()
        decoded = sum(len(b["label"]) for split in (datasets.train, datasets.validation)
                      for b in split.iter_batches(batch_size=256, batch_format="numpy"))
        epoch_decode_s = time.perf_counter() - started

    print(json.dumps({
        "files": files, "bad_files": len(data.bad), "decoded": decoded,
        "ray_start_s": round(ray_start_s, 2),
        "first_error_s": round(first_error_s, 2) if first_error_s is not None else None,
        "first_error_names_a_bad_file": bool(first_error) and any(f in first_error for f in data.bad),
        "check_s": round(check_s, 2), "epoch_decode_s": round(epoch_decode_s, 2),
        "check_over_epoch_decode": round(check_s / epoch_decode_s, 2),
        "goal_first_error_le_10s": first_error_s is not None and first_error_s <= 10,
    }))


if __name__ == "__main__":
    main()
