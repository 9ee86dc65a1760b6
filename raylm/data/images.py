"""Images: OpenCV decode -> RGB -> resize to size x size -> float32 in [0, 1], NHWC (as the article)."""

from __future__ import annotations

import cv2
import numpy as np


def decode_image(data: bytes, size: int) -> np.ndarray:
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if array is None:
        raise ValueError("not a decodable image")
    return preprocess_image(array, size)


def preprocess_image(bgr: np.ndarray, size: int) -> np.ndarray:
    """The training-time transform; serving must call this same function."""
    if bgr.shape[:2] != (size, size):
        # INTER_AREA for shrinking avoids aliasing; it is what OpenCV recommends for decimation.
        interp = cv2.INTER_AREA if max(bgr.shape[:2]) > size else cv2.INTER_LINEAR
        bgr = cv2.resize(bgr, (size, size), interpolation=interp)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) * (1.0 / 255.0)


def decode_image_batch(batch: dict, *, size: int, label_index: dict[str, int], bytes_column: str = "bytes",
                       label_column: str | None = None) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` UDF: encoded bytes (+ path or label column) -> image, label."""
    images = np.stack([decode_image(b, size) for b in batch[bytes_column]])
    if label_column is None:  # class folders: the label is the parent folder's name
        from raylm.data.files import label_of_path

        raw = [label_of_path(p) for p in batch["path"]]
    else:
        raw = batch[label_column]
    return {"image": images, "label": encode_labels(raw, label_index)}


def encode_labels(raw, label_index: dict[str, int]) -> np.ndarray:
    try:
        return np.fromiter((label_index[str(v)] for v in raw), dtype=np.int64, count=len(raw))
    except KeyError as err:
        raise ValueError(f"label {err.args[0]!r} is not one of task.labels {sorted(label_index)}") from None
