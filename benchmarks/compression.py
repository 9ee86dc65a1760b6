"""Dense vs compressed variants for the MiniLM text model, the seed CNN, resnet_small and the seed
Conv1D, in one run on the bundled demo data. Prints ONE JSON line (tables go to stderr).

    python benchmarks/compression.py                  # about 10-12 minutes on 2 shared cores
    python benchmarks/compression.py --quick          # fewer epochs and latency runs

Each model is trained briefly under Ray Train (short runs: the point is the ratios, not SOTA),
then every variant is compressed from that checkpoint with ``raylm.compress.compress``, which
measures the dense parent and the variant on the same validation rows, with the same number of
intra-op threads for torch (dense) and ONNX Runtime (onnx/int8 variants). ``onnx-fp32`` separates
the runtime's share of a speed-up from int8's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ONNX_FP32 = ["compress.export=onnx", "compress.variant=onnx-fp32"]
CASES = {
    # name: (config, training overrides, {variant: compress overrides})
    "text-minilm": ("text.yaml", ["train.epochs=2"], {
        "onnx-fp32": ONNX_FP32,
        "int8-dynamic": ["compress.quantize.mode=dynamic"],
        "magnitude50": ["compress.prune.method=magnitude", "compress.prune.sparsity=0.5"],
        "magnitude50-ft": ["compress.prune.method=magnitude", "compress.prune.sparsity=0.5",
                           "compress.finetune_epochs=1", "compress.finetune_lr=0.0001"],
        "structured50-int8": ["compress.prune.method=structured", "compress.prune.structured_ratio=0.5",
                              "compress.quantize.mode=dynamic"],
    }),
    "image-seed_cnn": ("image.yaml", ["train.epochs=4"], {
        "onnx-fp32": ONNX_FP32,
        "int8-static": ["compress.quantize.mode=static"],
        "magnitude50": ["compress.prune.method=magnitude", "compress.prune.sparsity=0.5"],
    }),
    "image-resnet_small": ("image.yaml", ["model.name=resnet_small", "train.epochs=6"], {
        "onnx-fp32": ONNX_FP32,
        "int8-static": ["compress.quantize.mode=static"],
        "structured50-ft": ["compress.prune.method=structured", "compress.prune.structured_ratio=0.5",
                            "compress.finetune_epochs=5", "compress.finetune_lr=0.003"],
        "structured50-ft-int8": ["compress.prune.method=structured", "compress.prune.structured_ratio=0.5",
                                 "compress.finetune_epochs=5", "compress.finetune_lr=0.003",
                                 "compress.quantize.mode=static"],
    }),
    "audio-seed_conv1d": ("audio.yaml", ["train.epochs=8"], {
        "onnx-fp32": ONNX_FP32,
        "int8-static": ["compress.quantize.mode=static"],
        "structured50": ["compress.prune.method=structured", "compress.prune.structured_ratio=0.5"],
    }),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storage-path", default="/tmp/raylm_bench")
    parser.add_argument("--quick", action="store_true", help="1 training epoch, fewer latency runs")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()

    from raylm.compress import compress
    from raylm.compress.measure import format_table
    from raylm.config import load_config
    from raylm.runtime import ensure_ray
    from raylm.train import fit

    ensure_ray(log_to_driver=False, include_dashboard=False)  # stdout keeps the one JSON line
    timing = ["compress.latency_threads=1", "compress.serving_batch_size=16",
              f"compress.latency_runs={10 if args.quick else 40}", "compress.latency_warmup=5"]
    started = time.time()
    out: dict = {"benchmark": "compression", "threads": 1, "serving_batch_size": 16, "models": {}}
    for case in args.cases:
        config, train_overrides, variants = CASES[case]
        base = [f"train.storage_path={args.storage_path}", f"train.name={case}-{int(time.time())}", *train_overrides]
        if args.quick:
            base.append("train.epochs=1")
        cfg = load_config(ROOT / "jobs" / "configs" / config, base)
        t0 = time.time()
        outcome = fit(cfg)
        row: dict = {"train_seconds": round(time.time() - t0, 1), "variants": {}}
        for name, overrides in variants.items():
            vcfg = load_config(ROOT / "jobs" / "configs" / config, base + timing + [f"compress.variant={name}", *overrides])
            report = compress(vcfg, outcome.checkpoint, verbose=False)
            dense, comp = report["dense"], report["compressed"]
            print(f"\n{case}\n" + format_table([("dense fp32", dense), (name, comp)], (1, 16)), file=sys.stderr, flush=True)
            row.setdefault("dense", {"accuracy": dense["accuracy"], "params": dense["params"], "file_bytes": dense["file_bytes"],
                                     "p50_ms_b1": dense["latency"]["batch_1"]["p50_ms"],
                                     "p50_ms_b16": dense["latency"]["batch_16"]["p50_ms"], "val_samples": dense["samples"]})
            r = report["ratios"]
            row["variants"][name] = {
                "accuracy": round(comp["accuracy"], 4), "accuracy_delta_points": round(100 * r["accuracy_delta"], 2),
                "size_ratio": round(r["size_ratio"], 3), "gzip_size_ratio": round(r["gzip_size_ratio"], 3),
                "params_ratio": round(r["params_ratio"], 3), "nonzero_ratio": round(r["nonzero_ratio"], 3),
                "latency_p50_ratio_b1": round(r["latency_p50_ratio_b1"], 3),
                "latency_p50_ratio_b16": round(r["latency_p50_ratio_b16"], 3),
                "agreement_with_dense": round(comp["agreement_with_dense"], 4),
                "p50_ms_b1": round(comp["latency"]["batch_1"]["p50_ms"], 4),
                "p50_ms_b16": round(comp["latency"]["batch_16"]["p50_ms"], 4),
            }
        onnx = row["variants"].get("onnx-fp32")
        for name, v in row["variants"].items():
            if onnx and "int8" in name:  # int8's own share: against the same runtime in fp32
                v["latency_p50_ratio_b16_vs_onnx_fp32"] = round(v["p50_ms_b16"] / onnx["p50_ms_b16"], 3)
                v["latency_p50_ratio_b1_vs_onnx_fp32"] = round(v["p50_ms_b1"] / onnx["p50_ms_b1"], 3)
        out["models"][case] = row
    out["goals"] = _goals(out["models"])
    out["seconds"] = round(time.time() - started, 1)
    print(json.dumps(out), flush=True)


def _goals(models: dict) -> dict:
    """The issue's targets, evaluated on this run's figures (reported, never asserted)."""
    goals = {}
    for case, row in models.items():
        for name, v in row["variants"].items():
            if name.startswith("int8"):
                goals[f"{case}/{name}"] = {"size<=0.3x": v["size_ratio"] <= 0.3,
                                           "p50_b16<=0.5x": v["latency_p50_ratio_b16"] <= 0.5,
                                           "drop<=1pt": v["accuracy_delta_points"] >= -1}
    if "structured50-ft" in models.get("image-resnet_small", {}).get("variants", {}):
        v = models["image-resnet_small"]["variants"]["structured50-ft"]
        goals["image-resnet_small/structured50-ft"] = {"speedup_b16>=1.5x": v["latency_p50_ratio_b16"] <= 1 / 1.5,
                                                        "drop<=1pt": v["accuracy_delta_points"] >= -1}
    return goals


if __name__ == "__main__":
    main()
