"""Images: OpenCV decode -> RGB -> resize to size x size -> float32 in [0, 1], NHWC (as the article).

The header is read first (Pillow, which parses it without decoding pixels): a format that is not
allowed, or more pixels than ``InputLimits.max_image_pixels``, is refused before OpenCV allocates.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np

from raylm.config import InputLimits
from raylm.data.limits import DecodeError, sniff_format

_DEFAULT_LIMITS = InputLimits()
_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "webp": "WEBP", "tiff": "TIFF"}


def image_header(data: bytes, limits: InputLimits = _DEFAULT_LIMITS) -> tuple[str, int, int]:
    """``(format, width, height)`` from the header alone; ``DecodeError`` when the limits refuse it."""
    from PIL import Image

    fmt = sniff_format(data, limits.image_formats, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[fmt]]) as header:
                width, height = header.size
    except Image.DecompressionBombError:
        raise DecodeError(f"the {fmt} image declares more than {limits.max_image_pixels} pixels") from None
    except Exception:  # Pillow raises several types for broken headers
        raise DecodeError(f"not a readable {fmt} image (broken header)") from None
    if width * height > limits.max_image_pixels:
        raise DecodeError(f"the {fmt} image declares {width}x{height} pixels, more than "
                          f"max_image_pixels={limits.max_image_pixels}")
    return fmt, width, height


def decode_image(data: bytes, size: int, limits: InputLimits = _DEFAULT_LIMITS) -> np.ndarray:
    """Encoded bytes -> ``(size, size, 3)`` float32 RGB in [0, 1]; ``DecodeError`` for refused or broken files."""
    image_header(data, limits)
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if array is None:
        raise DecodeError("not a decodable image (the pixel data is broken)")
    return preprocess_image(array, size)


def preprocess_image(bgr: np.ndarray, size: int) -> np.ndarray:
    """The training-time transform; serving must call this same function."""
    if bgr.shape[:2] != (size, size):
        # INTER_AREA for shrinking avoids aliasing; it is what OpenCV recommends for decimation.
        interp = cv2.INTER_AREA if max(bgr.shape[:2]) > size else cv2.INTER_LINEAR
        bgr = cv2.resize(bgr, (size, size), interpolation=interp)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) * (1.0 / 255.0)


def decode_image_batch(batch: dict, *, size: int, label_index: dict[str, int], bytes_column: str = "bytes",
                       label_column: str | None = None, limits: InputLimits = _DEFAULT_LIMITS) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` UDF: encoded bytes (+ path or label column) -> image, label."""
    images = np.stack([decode_image(b, size, limits) for b in batch[bytes_column]])
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
