"""What ``raylm augment preview`` shows of a batch, per modality: image tiles, MFCC heat maps, text lines.

The modality classes (``modality.py``) call these as their ``preview``; the command that builds the
batches and writes the grid (``augment_preview.py``) sits above them.
"""

from __future__ import annotations

import numpy as np


def text_lines(cfg, clean: dict, views: list[dict], extra: dict) -> list[str]:
    from raylm.data.text import load_tokenizer, tokenizer_source

    tok = load_tokenizer(tokenizer_source(cfg))
    hidden = set(extra["special_ids"]) - {extra["unknown_id"]}  # show dropouts

    def text(batch, i):
        return tok.decode([t for t, m in zip(batch["input_ids"][i], batch["attention_mask"][i]) if m and t not in hidden])

    lines = []
    for i in range(len(clean["input_ids"])):
        lines.append(f"clean:   {text(clean, i)}")
        lines.extend(f"epoch {e}: {text(view, i)}" for e, view in enumerate(views))
    return lines


def image_rows(cfg, clean: dict, views: list[dict], extra: dict) -> list[list[np.ndarray]]:
    return [_image_tiles(clean["image"])] + [_image_tiles(v["image"]) for v in views]


def frame_rows(cfg, clean: dict, views: list[dict], extra: dict) -> list[list[np.ndarray]]:
    low, high = np.percentile(clean["frames"], [1, 99])  # one scale for the grid: noise stays visible
    return [_frame_tiles(clean["frames"], low, high)] + [_frame_tiles(v["frames"], low, high) for v in views]


def _image_tiles(images: np.ndarray, zoom: int = 4) -> list[np.ndarray]:
    import cv2

    tiles = []
    for rgb in images:
        bgr = cv2.cvtColor((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
        tiles.append(cv2.resize(bgr, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST))
    return tiles


def _frame_tiles(frames: np.ndarray, low: float, high: float) -> list[np.ndarray]:
    import cv2

    tiles = []
    for clip in frames:  # (time, coeffs) -> coefficient 0 at the bottom, time to the right
        scaled = np.clip((clip.T[::-1] - low) / max(high - low, 1e-6), 0, 1)
        heat = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
        tiles.append(cv2.resize(heat, None, fx=2, fy=4, interpolation=cv2.INTER_NEAREST))
    return tiles
