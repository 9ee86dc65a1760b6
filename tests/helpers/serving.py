"""Shared by the serving tests: untrained artifacts, request bodies."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np

from tests.helpers.configs import tiny_config_in

FAST = ("compress.latency_runs=2", "compress.latency_warmup=0", "compress.serving_batch_size=2",
        "compress.max_eval_samples=8")


def _checkpoint(cfg, labels: list[str]) -> str:
    """An untrained (seeded) model is enough: serving must reproduce the artifact, whatever it says."""
    import torch

    from raylm.models import build_model
    from raylm.train.checkpoint import save_checkpoint_atomic

    torch.manual_seed(0)
    model = build_model(cfg, len(labels)).eval()
    return str(save_checkpoint_atomic(cfg.run_dir / "train" / "checkpoint_untrained", model, cfg, labels,
                                      epoch=0, data_fingerprint="test"))


def _png(label: str) -> bytes:
    img = np.zeros((40, 40, 3), np.uint8)
    for k in range(0, 40, 8):
        if label == "horizontal":
            cv2.rectangle(img, (0, k), (39, k + 3), (200, 150, 90), -1)
        else:
            cv2.rectangle(img, (k, 0), (k + 3, 39), (90, 150, 200), -1)
    return cv2.imencode(".png", img)[1].tobytes()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _image_artifact(root: Path, data_root: dict[str, Path], name: str) -> str:
    from raylm.compress import compress

    cfg = tiny_config_in(root, data_root, "image", "task.labels=[horizontal,vertical]", f"train.name={name}", *FAST)
    return compress(cfg, _checkpoint(cfg, ["horizontal", "vertical"]), verbose=False)["artifact"]
