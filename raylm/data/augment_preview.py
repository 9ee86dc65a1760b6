"""``raylm augment preview``: what the configured policy does to real training samples.

One column per sample; the first row is the clean sample, each further row the same sample as
training sees it in epoch 0, 1, ... (the exact draws of a run with this ``train.seed``).
Images are shown as they are; audio as a heat map of the MFCC frames (coefficients up, time
right); text is printed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# What each modality draws (its ``preview``) moved one floor down, beside the modality classes; the
# names stay importable from here.
from raylm.data.preview_tiles import frame_rows, image_rows, text_lines  # noqa: F401

_GAP = 2
_LABEL_WIDTH = 74


def preview(cfg, out: str | Path, *, samples: int = 8, epochs: int = 3) -> Path | list[str]:
    """Write the PNG grid to ``out`` (image/audio) and return its path; for text, return lines."""
    from raylm.config import AugmentConfig
    from raylm.data import build_datasets
    from raylm.data.augment import augment_batch, policy_for
    from raylm.data.modality import modality_record

    record = modality_record(cfg.task.modality)
    if record.preview is None:
        raise ValueError(f"augment preview: no preview for {record.name} data")
    clean_cfg = cfg.model_copy(update={"augment": AugmentConfig()})
    pool = build_datasets(clean_cfg).train.take_batch(max(samples, 256), batch_format="numpy")
    clean = {k: v[_spread_over_labels(pool["label"], samples)] for k, v in pool.items()}
    extra = record.augment_extra(cfg) if record.augment_extra else {}
    views = [augment_batch(clean, modality=record.name, policy=policy_for(cfg), seed=cfg.train.seed, epoch=e, extra=extra)
             for e in range(epochs)]
    rows = record.preview(cfg, clean, views, extra)
    if all(isinstance(row, str) for row in rows):  # text: lines to print
        return rows
    names = ["clean"] + [f"epoch {e}" for e in range(epochs)]
    return _write_grid(rows, names, Path(out))


def _spread_over_labels(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices taking labels in turn (class folders are read in order: the head is one class)."""
    by_label = [np.flatnonzero(labels == label).tolist() for label in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < min(count, len(labels)):
        for indices in by_label:
            if indices and len(picked) < count:
                picked.append(indices.pop(0))
    return np.array(picked, dtype=np.int64)


def _write_grid(rows: list[list[np.ndarray]], names: list[str], out: Path) -> Path:
    import cv2

    tile_h, tile_w = rows[0][0].shape[:2]
    columns = max(len(r) for r in rows)
    height = len(rows) * (tile_h + _GAP) + _GAP
    width = _LABEL_WIDTH + columns * (tile_w + _GAP) + _GAP
    canvas = np.full((height, width, 3), 255, np.uint8)
    for r, (tiles, name) in enumerate(zip(rows, names)):
        top = _GAP + r * (tile_h + _GAP)
        cv2.putText(canvas, name, (4, top + tile_h // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        for c, tile in enumerate(tiles):
            left = _LABEL_WIDTH + _GAP + c * (tile_w + _GAP)
            canvas[top:top + tile_h, left:left + tile_w] = tile
    out = out.expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    if not cv2.imwrite(str(tmp), canvas):
        raise ValueError(f"--out: cannot write a PNG to {out}")
    tmp.replace(out)  # whole file or nothing
    return out
