"""The size / speed / accuracy frontier of every compression recipe, per modality. JSON lines on stdout.

For each model a dense checkpoint is trained briefly under Ray Train on its demo data, then every
recipe is compressed from it with ``raylm.compress.compress``, which measures against the dense model
on its fastest runtime (fp32 ONNX Runtime, 1 intra-op thread) on the whole validation split:

- ``size_ratio``: artifact bytes / dense fp32 ONNX bytes;
- ``p50_ratio_b1`` and ``p50_ratio_b<serving>``: p50 of the artifact / p50 of the dense model, the
  two timed in ALTERNATION in the same process (``measure.paired_p50``), so machine load falls on
  both alike (the ratio is the models' own; the load average is printed beside it);
- ``accuracy_drop_pts``: dense accuracy minus the artifact's, in points, whole validation split.

One line per (model, recipe), then one ``"frontier"`` line per model naming the recipes no other
recipe (dense included) beats on size, p50 at the serving batch and accuracy drop all at once; the
frontier is also drawn on stderr (size ratio vs p50 ratio). Goals (issue 28) are evaluated, never asserted.

    python benchmarks/compression_frontier.py                      # image + audio, ~15 min on 2 quiet cores
    python benchmarks/compression_frontier.py --cases image-seed_cnn --quick
    python benchmarks/compression_frontier.py --cases text-minilm  # slow: MiniLM distillation on CPU
    python benchmarks/compression_frontier.py --cases text-minilm --checkpoint <dense_checkpoint> --recipes ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INT8 = ["compress.quantize.mode=static-selective"]
STRUCTURED = ["compress.prune.method=structured", "compress.prune.structured_ratio=0.5", "compress.finetune_epochs=3",
              "compress.finetune_lr=0.002"]
DISTILL = ["compress.distill.method=distill", "compress.distill.width=0.5", "compress.distill.epochs=8"]
CNN_RECIPES = {
    "int8-dynamic": ["compress.quantize.mode=dynamic"],
    "int8-static": ["compress.quantize.mode=static"],
    "int8-static-selective": INT8,
    "magnitude80-ft2": ["compress.prune.method=magnitude", "compress.prune.sparsity=0.8", "compress.finetune_epochs=2"],
    "structured50-ft3": STRUCTURED,
    "structured50-ft3-int8": STRUCTURED + INT8,
    "distill50": DISTILL,
    "distill50-int8": DISTILL + INT8,
}
# The moonshot (issue 28: <= 0.1x size AND <= 0.2x p50): MiniLM's word embedding is half its bytes, so the
# student keeps the rows of the tokens the training split uses (compress.vocabulary=train), a third of the
# encoder layers (initialised from the teacher's) and half of each FFN, distilled, then int8.
VOCAB = ["compress.vocabulary=train"]
STUDENT = ["compress.distill.method=distill", "compress.distill.width=0.5", "compress.distill.epochs=4",
           "compress.distill.lr=0.0002"]
TEXT_RECIPES = {
    "int8-dynamic": ["compress.quantize.mode=dynamic"],
    "vocab-distill-l33-w50-int8": VOCAB + STUDENT + ["compress.distill.layers=0.34", "compress.quantize.mode=dynamic"],
    "vocab-int8-dynamic": VOCAB + ["compress.quantize.mode=dynamic"],
    "vocab-distill-l50-w50-int8": VOCAB + STUDENT + ["compress.distill.layers=0.5", "compress.quantize.mode=dynamic"],
    "structured50-int8": ["compress.prune.method=structured", "compress.prune.structured_ratio=0.5",
                          "compress.quantize.mode=dynamic"],
    "distill-l50-w50-int8": ["compress.distill.method=distill", "compress.distill.width=0.5",
                             "compress.distill.layers=0.5", "compress.distill.epochs=3", "compress.distill.lr=0.0002",
                             "compress.quantize.mode=dynamic"],
}
CASES = {  # name: (config, training overrides, recipes, goal: (size, p50) ratios at <= 1 point)
    "image-seed_cnn": ("image.yaml", ["train.epochs=8", "train.lr_schedule=cosine"], CNN_RECIPES, (0.25, 0.67)),
    "image-resnet_small": ("image.yaml", ["model.name=resnet_small", "train.epochs=6"], CNN_RECIPES, (0.25, 0.67)),
    "audio-seed_conv1d": ("audio.yaml", ["train.epochs=8"], CNN_RECIPES, (0.25, 0.5)),
    "text-minilm": ("text.yaml", ["train.epochs=2"], TEXT_RECIPES, (0.1, 0.2)),
}


def frontier(points: dict[str, tuple[float, float, float]]) -> list[str]:
    """Names whose (size, p50, drop) no other point matches or beats on all three while beating on one."""
    def beats(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))
    return sorted(n for n, p in points.items() if not any(beats(q, p) for m, q in points.items() if m != n))


def draw(points: dict[str, tuple[float, float, float]], on_front: list[str], width: int = 50, height: int = 14) -> str:
    """An ASCII scatter: x = size ratio (0..1.1), y = p50 ratio at the serving batch; '*' on the frontier."""
    top = max(1.1, max(p[1] for p in points.values()) * 1.05)
    grid = [[" "] * width for _ in range(height)]
    legend = []
    for i, (name, (size, p50, drop)) in enumerate(sorted(points.items())):
        mark = chr(ord("a") + i)
        x, y = min(width - 1, int(size / 1.1 * (width - 1))), min(height - 1, int(p50 / top * (height - 1)))
        grid[height - 1 - y][x] = mark
        legend.append(f"  {mark}{'*' if name in on_front else ' '} {name}: size {size:.3f}x, p50 {p50:.3f}x, drop {drop:+.2f} pts")
    rows = [f"{top * (height - 1 - r) / (height - 1):5.2f} |" + "".join(line) for r, line in enumerate(grid)]
    return "\n".join(rows + ["      +" + "-" * width, "       size ratio 0 .. 1.1  (y: p50 ratio)"] + legend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage-path", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--cases", nargs="*", default=["image-seed_cnn", "audio-seed_conv1d"], choices=list(CASES))
    parser.add_argument("--recipes", nargs="*", default=None, help="only these recipe names")
    parser.add_argument("--serving-batch", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="fewer latency runs")
    parser.add_argument("--checkpoint", default=None, help="a dense checkpoint of the (one) case to compress, "
                                                           "instead of training one (its 'dense' line names it)")
    args = parser.parse_args()
    if args.checkpoint and len(args.cases) != 1:
        parser.error("--checkpoint: one dense checkpoint is one case: name it alone in --cases")

    from raylm.compress import compress
    from raylm.config import load_config
    from raylm.runtime import ensure_ray
    from raylm.train import fit

    ensure_ray(log_to_driver=False, include_dashboard=False)  # stdout keeps the JSON lines
    storage = args.storage_path or tempfile.mkdtemp(prefix="raylm-frontier-")
    b = args.serving_batch
    timing = ["compress.latency_threads=1", f"compress.serving_batch_size={b}",
              f"compress.latency_runs={20 if args.quick else 60}", "compress.latency_warmup=5"]
    for case in args.cases:
        config, train_overrides, recipes, (size_goal, p50_goal) = CASES[case]
        base = [f"train.storage_path={storage}", f"train.name={case}-{int(time.time())}", "train.num_workers=1",
                *train_overrides]
        checkpoint = args.checkpoint or fit(load_config(ROOT / "jobs" / "configs" / config, base)).checkpoint
        print(json.dumps({"benchmark": "compression_frontier", "model": case, "dense_checkpoint": str(checkpoint)}),
              flush=True)
        points = {"dense": (1.0, 1.0, 0.0)}
        for name, overrides in recipes.items():
            if args.recipes and name not in args.recipes:
                continue
            cfg = load_config(ROOT / "jobs" / "configs" / config, base + timing + [f"compress.variant={name}", *overrides])
            started = time.time()
            try:
                report = compress(cfg, checkpoint, verbose=False)
            except Exception as err:  # one recipe failing must not hide the others' figures
                print(json.dumps({"benchmark": "compression_frontier", "model": case, "recipe": name,
                                  "error": f"{type(err).__name__}: {str(err)[:300]}"}), flush=True)
                continue
            r, dense = report["ratios"], report["dense"]
            drop, size, p50 = r["accuracy_drop_pts"], r["size_ratio"], r["latency_ratio"]
            points[name] = (size, p50, drop)
            print(json.dumps({
                "benchmark": "compression_frontier", "model": case, "recipe": name, "variant": report["variant"],
                "runtime": report["compressed"]["runtime"], "dense_runtime": dense["runtime"],
                "size_ratio": round(size, 4), "p50_ratio_b1": round(r["paired_latency_ratio_b1"], 3),
                f"p50_ratio_b{b}": round(p50, 3), "timing": "paired", "accuracy_drop_pts": drop,
                "dense_accuracy": round(dense["accuracy"], 4), "val_samples": dense["samples"],
                "dense_bytes": dense["file_bytes"], "dense_p50_ms_b1": round(dense["latency"]["batch_1"]["p50_ms"], 4),
                f"dense_p50_ms_b{b}": round(dense["latency"][f"batch_{b}"]["p50_ms"], 4),
                "goal_met": bool(size <= size_goal and p50 <= p50_goal and drop <= 1.0), "gain": r["gain"]["passed"],
                "seconds": round(time.time() - started, 1), "loadavg": [round(x, 2) for x in os.getloadavg()],
            }), flush=True)
        on_front = frontier(points)
        print(json.dumps({"benchmark": "compression_frontier", "model": case, "frontier": on_front,
                          "goal": {"size_ratio": size_goal, f"p50_ratio_b{b}": p50_goal, "accuracy_drop_pts": 1.0}}),
              flush=True)
        print(f"\n{case}: size vs p50 (batch {b}), paired against fp32 ONNX Runtime\n{draw(points, on_front)}",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
