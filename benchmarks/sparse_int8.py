"""Sparsity x int8: artifact size of 0 / 80 / 90 % magnitude-pruned int8 seed_cnn against the dense fp32
model (issue #28 item 1). Prints ONE JSON line (tables go to stderr).

    python benchmarks/sparse_int8.py                 # a few minutes on 2 shared cores
    python benchmarks/sparse_int8.py --modes dynamic

seed_cnn is trained briefly in this process on the bundled digits (jobs/configs/image.yaml; sizes do not
depend on how it was trained, and a 2-core machine shared with others starts no Train worker group), then each
variant is compressed from that checkpoint with ``raylm.compress.compress``, which reports the artifact's
bytes on disk (model.onnx plus model.sparse.safetensors when the int8 bitmask layout is used) and the
dense fp32 reference's. ``dense-layout`` variants switch the layout off (``compress.sparse_storage=false``):
the size every sparsity had before, with the same accuracy (the layout is lossless).
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

VARIANTS = {  # name: compress overrides (the quantize mode is added per run)
    "sparse0": ["compress.prune.method=none"],
    "sparse80": ["compress.prune.method=magnitude", "compress.prune.sparsity=0.8"],
    "sparse90": ["compress.prune.method=magnitude", "compress.prune.sparsity=0.9"],
    "sparse80-dense-layout": ["compress.prune.method=magnitude", "compress.prune.sparsity=0.8",
                              "compress.sparse_storage=false"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storage-path", default=None, help="default: a new temporary directory")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=0)
    parser.add_argument("--modes", nargs="*", default=["dynamic", "static"])
    args = parser.parse_args()

    from raylm.compress import compress
    from raylm.config import load_config
    from raylm.runtime import ensure_ray

    storage = args.storage_path or tempfile.mkdtemp(prefix="raylm-sparse-int8-")
    ensure_ray(log_to_driver=False, include_dashboard=False)  # stdout keeps the one JSON line
    base = [f"train.storage_path={storage}", f"train.name=sparse-int8-{int(time.time())}", f"train.epochs={args.epochs}",
            "compress.latency_runs=5", "compress.latency_warmup=1", f"compress.finetune_epochs={args.finetune_epochs}"]
    config = ROOT / "jobs" / "configs" / "image.yaml"
    started = time.time()
    checkpoint = _train_in_process(load_config(config, base))
    out: dict = {"benchmark": "sparse_int8", "model": "seed_cnn", "load_average_start": os.getloadavg(), "modes": {}}
    for mode in args.modes:
        rows: dict = {}
        for name, overrides in VARIANTS.items():
            cfg = load_config(config, base + overrides + [f"compress.quantize.mode={mode}",
                                                          f"compress.variant={name}-{mode}"])
            report = compress(cfg, checkpoint, verbose=False)
            dense, comp, parity = report["dense"], report["compressed"], report["parity"]
            rows.setdefault("dense_fp32", {"file_bytes": dense["file_bytes"], "accuracy": round(dense["accuracy"], 4)})
            rows[name] = {"file_bytes": comp["file_bytes"],
                          "size_vs_dense_fp32": round(comp["file_bytes"] / dense["file_bytes"], 4),
                          "accuracy": round(comp["accuracy"], 4), "sparsity": round(comp.get("sparsity", 0.0), 3),
                          "sparse_int8_tensors": parity.get("sparse_int8_tensors", 0),
                          "sparse_int8_max_abs_diff": parity.get("sparse_int8_max_abs_diff")}
            print(f"{mode} {name}: {rows[name]}", file=sys.stderr, flush=True)
        same = rows["sparse80"]["accuracy"] == rows["sparse80-dense-layout"]["accuracy"]
        rows["sparse80_vs_dense_layout"] = {
            "size_ratio": round(rows["sparse80"]["file_bytes"] / rows["sparse80-dense-layout"]["file_bytes"], 4),
            "same_accuracy": same}
        out["modes"][mode] = rows
    out["load_average_end"] = os.getloadavg()
    out["seconds"] = round(time.time() - started, 1)
    print(json.dumps(out), flush=True)


def _train_in_process(cfg) -> Path:
    """A trained seed_cnn checkpoint without a Ray Train run (as tests/test_compress_integration.py makes one)."""
    import torch
    import torch.nn.functional as F

    from raylm.compress.measure import collect
    from raylm.data import build_datasets
    from raylm.models import build_model
    from raylm.train.checkpoint import save_checkpoint_atomic

    data = build_datasets(cfg)
    rows = collect(data.train, ("image", "label"))
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, len(data.labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    for _ in range(cfg.train.epochs):
        for index in torch.randperm(len(rows["label"])).split(cfg.train.batch_size):
            batch = {k: torch.from_numpy(v[index.numpy()]) for k, v in rows.items()}
            loss = F.cross_entropy(model(batch["image"]), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return save_checkpoint_atomic(cfg.run_dir / "train" / "checkpoint_inproc", model.eval(), cfg, data.labels,
                                  epoch=cfg.train.epochs, data_fingerprint=data.fingerprint)


if __name__ == "__main__":
    main()
