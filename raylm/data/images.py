"""Images: OpenCV decode -> RGB -> resize to size x size -> float32 in [0, 1], NHWC (as the article).

The header is read first (a PNG's IHDR chunk directly, the other formats by Pillow, which parses them
without decoding pixels): a format that is not allowed, or more pixels than
``InputLimits.max_image_pixels``, is refused before OpenCV allocates.
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
    fmt = sniff_format(data, limits.image_formats, "image")
    if fmt == "png":  # the size is at a fixed place; Pillow's parse was a tenth of training's decode (issue 31)
        width, height = _png_size(data)
    else:
        width, height = _pillow_size(data, fmt, limits)
    if width * height > limits.max_image_pixels:
        raise DecodeError(f"the {fmt} image declares {width}x{height} pixels, more than "
                          f"max_image_pixels={limits.max_image_pixels} (data.limits.max_image_pixels; "
                          "serve.limits when serving)")
    return fmt, width, height


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's first chunk, which the format requires to be a 13-byte IHDR."""
    if len(data) < 33 or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise DecodeError("not a readable png image (broken header)")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _pillow_size(data: bytes, fmt: str, limits: InputLimits) -> tuple[int, int]:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[fmt]]) as header:
                width, height = header.size
    except Image.DecompressionBombError:
        raise DecodeError(f"the {fmt} image declares more than {limits.max_image_pixels} pixels") from None
    except Exception:  # Pillow raises several types for broken headers
        raise DecodeError(f"not a readable {fmt} image (broken header)") from None
    return width, height


def decode_image(data: bytes, size: int, limits: InputLimits = _DEFAULT_LIMITS) -> np.ndarray:
    """Encoded bytes -> ``(size, size, 3)`` float32 RGB in [0, 1]; ``DecodeError`` for refused or broken files."""
    return scale_rgb(decode_resized(data, size, limits))


def decode_resized(data: bytes, size: int, limits: InputLimits = _DEFAULT_LIMITS) -> np.ndarray:
    """Encoded bytes -> ``(size, size, 3)`` uint8 BGR, the decoder's own pixels resized: the per-file half of
    :func:`decode_image`. A batch of them is scaled at once (:func:`scale_rgb`), as training's decode does."""
    image_header(data, limits)
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if array is None:
        raise DecodeError("not a decodable image (the pixel data is broken)")
    return resize_image(array, size)


def preprocess_image(bgr: np.ndarray, size: int) -> np.ndarray:
    """The training-time transform; serving must call this same function."""
    return scale_rgb(resize_image(bgr, size))


def resize_image(bgr: np.ndarray, size: int) -> np.ndarray:
    if bgr.shape[:2] != (size, size):
        # INTER_AREA for shrinking avoids aliasing; it is what OpenCV recommends for decimation.
        interp = cv2.INTER_AREA if max(bgr.shape[:2]) > size else cv2.INTER_LINEAR
        bgr = cv2.resize(bgr, (size, size), interpolation=interp)
    return bgr


_SCALE = np.float32(1.0 / 255.0)


def scale_rgb(bgr: np.ndarray) -> np.ndarray:
    """uint8 BGR ``(..., 3)`` (one image or a stacked batch) -> float32 RGB in [0, 1], in one pass: the channels
    reversed (what ``cv2.COLOR_BGR2RGB`` does to 3 channels) and each value times float32(1/255), bit for bit
    what ``astype(float32) * (1 / 255)`` gives, without the intermediate float copy."""
    out = np.empty(bgr.shape, np.float32)
    np.multiply(bgr[..., ::-1], _SCALE, out=out, dtype=np.float32)
    return out


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
