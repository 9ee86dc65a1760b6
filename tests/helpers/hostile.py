"""Hostile bytes and request bodies, shared by the tests and benchmarks/serve_hostile.py.

Each request case is ``(case, app, raw body, headers, status, reason)``: what an attacker sends to
the app serving that modality, and the 4xx (with a reason) raylm must answer.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import cv2
import numpy as np
import soundfile


def jpeg_declaring(width: int, height: int) -> bytes:
    """A valid 8x8 JPEG whose frame header (SOF0) is patched to declare ``width`` x ``height``."""
    data = bytearray(cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_declaring(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose IHDR declares ``width`` x ``height`` (CRC fixed, so decoders trust it)."""
    data = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def wav(samples: np.ndarray, sr: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, samples, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def huge_samples(n: int) -> np.ndarray:
    """Finite float32 samples near the type's limit: their features overflow."""
    return (np.full(n, 3e38, np.float32) * np.sign(np.sin(np.arange(n)))).astype(np.float32)


def request_corpus(audio_key: dict[str, str] | None = None) -> list[tuple[str, str, bytes, dict, int, str]]:
    """Hostile requests for the ``image``, ``audio`` and ``text`` apps of tests/integration/serve/test_serve.py."""
    key = dict(audio_key or {})
    ok_png = cv2.imencode(".png", np.full((40, 40, 3), 90, np.uint8))[1].tobytes()
    tiff = cv2.imencode(".tiff", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    hdr = cv2.imencode(".hdr", np.zeros((8, 8, 3), np.float32))[1].tobytes()

    def image(value) -> bytes:
        return json.dumps({"image": value}).encode()

    def audio(data: bytes) -> bytes:
        return json.dumps({"audio": b64(data)}).encode()

    return [
        ("jpeg bomb", "image", image(b64(jpeg_declaring(16000, 16000))), {}, 422, "pixels"),
        ("png bomb", "image", image(b64(png_declaring(30000, 30000))), {}, 422, "pixels"),
        ("png bomb in a list", "image", image([b64(ok_png), b64(png_declaring(9000, 9000))]), {}, 422, "image[1]"),
        ("tiff", "image", image(b64(tiff)), {}, 422, "tiff images are not accepted"),
        ("radiance hdr", "image", image(b64(hdr)), {}, 422, "accepted format"),
        ("nested arrays", "image", b"[" * 200_000, {}, 400, "nested too deeply"),
        ("nested in the field", "image", b'{"image": ' + b"[" * 100_000, {}, 400, "nested too deeply"),
        ("nested objects", "image", b'{"a":' * 50_000, {}, 400, "nested too deeply"),
        ("huge array", "image", image(["a"] * 100_000), {}, 422, "max_items"),
        ("huge integer", "image", b'{"image": ' + b"9" * 5000 + b"}", {}, 400, "malformed JSON"),
        ("NaN", "image", b'{"image": NaN}', {}, 422, "image"),
        ("Infinity", "image", b'{"image": [Infinity]}', {}, 422, "image"),
        ("null", "image", b'{"image": null}', {}, 422, "image"),
        ("object", "image", b'{"image": {"$ref": "#"}}', {}, 422, "image"),
        ("bool", "image", b'{"image": true}', {}, 422, "image"),
        ("invalid utf-8", "image", b'{"image": "\xff\xfe"}', {}, 400, "malformed JSON"),
        ("long tier name", "image", json.dumps({"image": b64(ok_png), "tier": "t" * 100_000}).encode(), {}, 422, "tier"),
        ("wav declaring 1 Hz", "audio", audio(wav(np.zeros(10_000, np.float32), 1, "PCM_U8")), key, 422, "sample rate of 1 Hz"),
        ("wav of 120 s", "audio", audio(wav(np.zeros(120 * 4000, np.float32), 4000, "PCM_U8")), key, 422, "max_audio_seconds"),
        ("flac of 61 s", "audio", audio(wav(np.zeros(61 * 8000, np.float32), 8000, "PCM_16", "FLAC")), key, 422, "longer"),
        ("9 channels", "audio", audio(wav(np.zeros((800, 9), np.float32), 8000)), key, 422, "9 channels"),
        ("NaN samples", "audio", audio(wav(np.full(800, np.nan, np.float32), 8000, "FLOAT")), key, 422, "non-finite"),
        ("samples near float32 max", "audio", audio(wav(huge_samples(4000), 8000, "FLOAT")), key, 422, "finite"),
        ("aiff", "audio", audio(wav(np.zeros(800, np.float32), 8000, "PCM_16", "AIFF")), key, 422, "accepted format"),
        ("a wav posted raw", "audio", wav(np.zeros(800, np.float32), 8000), key | {"content-type": "audio/wav"}, 400,
         'the body was sent as audio/wav; this route takes JSON, content-type application/json: {"audio": ...}'),
        ("nested text", "text", b"[" * 3000, {}, 400, "nested too deeply"),
        ("text wrong type", "text", b'{"text": [1, 2]}', {}, 422, "text"),
    ]
