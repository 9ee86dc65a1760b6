"""Does compression pay in the main job? The pipeline (sweep -> dense retrain -> compress with the
accuracy guard and gain gate -> evaluate from the exported file) for image, text and audio, and
the served artifact against the dense model of the same retrain, measured in the same run.
Prints ONE JSON line per modality (the pipeline's own console goes to stderr).

    python benchmarks/pipeline_quality.py                       # all three (text is the long one)
    python benchmarks/pipeline_quality.py --modality image

Goal per modality: accuracy drop <= 1 point AND (size <= 0.5x OR p50 at the serving batch <= 0.67x);
dense levels digits >= 0.97, topics >= 0.95, spoken_digits >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {"image": ("image_tune.yaml", 0.97), "text": ("text_tune.yaml", 0.95), "audio": ("audio_tune.yaml", 0.95)}


def run(modality: str, storage: str, overrides: list[str]) -> dict:
    from raylm.config import load_config
    from raylm.pipeline import format_summary, run_pipeline

    name, dense_goal = CONFIGS[modality]
    cfg = load_config(ROOT / "jobs" / "configs" / name,
                      [f"train.storage_path={storage}", f"train.name=quality-{modality}", *overrides])
    started = time.perf_counter()
    with redirect_stdout(sys.stderr):
        record = run_pipeline(cfg, stop="evaluate")
        record.run_dir = str(cfg.run_dir)
        print(format_summary(record))
    st = record.to_json()["stages"]
    c, e = st["compress"], st["evaluate"]
    dense = c["dense"]
    size_ratio, latency_ratio = c["size_ratio"], c["latency_ratio"]
    drop = e["accuracy_drop_pts"]
    return {
        "benchmark": "pipeline_quality", "modality": modality, "config": name,
        "served_recipe": c["recipe"], "tried": [a["recipe"] + (" ok" if a["passed"] else f" rejected: {a['why']}")
                                                for a in c["attempts"]],
        "dense_accuracy": round(dense["accuracy"], 4), "served_accuracy": round(e["accuracy"], 4),
        "accuracy_drop_pts": drop, "dense_mb": round(dense["size_mb"], 4), "served_mb": round(e["size_mb"], 4),
        "size_ratio": round(size_ratio, 3), "dense_p50_ms": round(dense["latency_ms"], 3),
        "served_p50_ms": round(c["latency_ms"], 3), "latency_ratio": round(latency_ratio, 3),
        "batch_size": c["latency_batch_size"], "val_samples": e["samples"],
        "goal_met": drop <= 1.0 and (size_ratio <= 0.5 or latency_ratio <= 0.67),
        "dense_level_goal": dense_goal, "dense_level_met": dense["accuracy"] >= dense_goal,
        "sweep_trials": st["tune"]["trials"], "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=sorted(CONFIGS), action="append", help="default: all three")
    parser.add_argument("--storage", default=None, help="where runs are written (default: a temp dir)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for every modality")
    args = parser.parse_args()
    from raylm.runtime import ensure_ray

    ensure_ray()
    storage = args.storage or tempfile.mkdtemp(prefix="raylm-quality-")
    for modality in args.modality or ["image", "audio", "text"]:
        print(json.dumps(run(modality, storage, args.overrides)), flush=True)


if __name__ == "__main__":
    main()
