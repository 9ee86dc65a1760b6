"""Keras backend: dense vs pruned vs int8 TFLite for the article's three Keras models, one JSON line.

Each model is trained under TensorflowTrainer (2 workers) on a demo set, then compressed with
tfmot (80 % magnitude pruning with a PolynomialDecay fine-tune, prune-preserving QAT, full-int8
TFLite). Every figure is measured from the TFLite files in this run by the same ``measure()`` as
torch artifacts (p50 at ``compress.serving_batch_size``); ratios are against the dense float
TFLite model of the same run. Published anchors: tfmot pruning ~3x smaller after gzip at
80 % sparsity; QAT int8 ~4x smaller with <= 1 point accuracy loss.

    python benchmarks/keras_compression.py [--sparsity 0.8] [--storage-path /tmp/raylm_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from raylm.config import load_config  # noqa: E402

MODELS = [  # (modality, model, demo data set, train epochs, lr, batch size)
    ("image", "seed_cnn", "digits", 4, 0.003, 64),
    ("image", "seed_mlp", "digits", 4, 0.003, 64),
    ("audio", "seed_conv1d", "spoken_digits", 8, 0.003, 32),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--storage-path", default="/tmp/raylm_bench")
    args = parser.parse_args()

    from raylm.compress.keras import compress_keras_checkpoint
    from raylm.runtime import ensure_ray
    from raylm.train import fit

    ensure_ray(num_cpus=2, include_dashboard=False, configure_logging=False)
    started = time.time()
    results = {}
    for modality, name, dataset, epochs, lr, batch in MODELS:
        cfg = load_config(None, [
            f"task.modality={modality}", f"model.name={name}", "model.backend=keras", f"data.name={dataset}",
            f"train.epochs={epochs}", f"train.lr={lr}", f"train.batch_size={batch}", "train.num_workers=2",
            "train.cpus_per_worker=0.5", f"train.storage_path={args.storage_path}", f"train.name=bench-{name}",
            "compress.prune.method=magnitude", f"compress.prune.sparsity={args.sparsity}",
            "compress.quantize.mode=static", f"compress.finetune_epochs={args.finetune_epochs}",
        ])
        outcome = fit(cfg)
        compressed = compress_keras_checkpoint(cfg, outcome.checkpoint)
        rows = {row["variant"]: row for row in compressed.report}
        dense, pruned, int8 = rows["dense"], rows["pruned"], rows["int8"]
        batch = f"batch_{cfg.compress.serving_batch_size}"

        def vs_dense(row, key):
            return round(row[key] / dense[key], 3)

        def p50(row):
            return round(row["latency"][batch]["p50_ms"], 4)

        results[name] = {
            "train_val_accuracy": round(outcome.metrics["val_accuracy"], 4),
            "validation_samples": dense["samples"], "latency_batch": cfg.compress.serving_batch_size,
            "dense": {"accuracy": round(dense["accuracy"], 4), "tflite_bytes": dense["file_bytes"],
                      "gzip_bytes": dense["gzip_bytes"], "p50_ms": p50(dense)},
            "pruned": {"sparsity": round(pruned["sparsity"], 4),
                       "accuracy_delta": round(pruned["accuracy"] - dense["accuracy"], 4),
                       "gzip_ratio": vs_dense(pruned, "gzip_bytes"),
                       "dense_over_pruned_gzip": round(dense["gzip_bytes"] / pruned["gzip_bytes"], 2)},
            "int8": {"accuracy_delta": round(int8["accuracy"] - dense["accuracy"], 4),
                     "size_ratio": vs_dense(int8, "file_bytes"),
                     "dense_over_int8_size": round(dense["file_bytes"] / int8["file_bytes"], 2),
                     "gzip_ratio": vs_dense(int8, "gzip_bytes"), "latency_ratio": round(p50(int8) / p50(dense), 3),
                     "p50_ms": p50(int8), "agreement_with_keras": round(int8["agreement_with_keras"], 4),
                     "sparsity": round(int8["sparsity"], 4)},
        }
    print(json.dumps({"benchmark": "keras_compression", "sparsity": args.sparsity,
                      "finetune_epochs": args.finetune_epochs, "models": results,
                      "wall_s": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()
