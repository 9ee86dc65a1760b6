"""Request items -> model inputs, with the very functions training used (raylm.data).

The artifact's ``preprocessing`` record says which function and settings the model was trained
with; serving calls the same function with the same settings, so a served image is resized,
coloured and scaled exactly as the training images were.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raylm.config import InputLimits
from raylm.errors import RaylmError


class InputError(RaylmError):
    """A request item that cannot become a model input; ``field`` names where it is."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field


def _b64(value: str | bytes, field: str) -> bytes:
    if isinstance(value, bytes):  # the Open Inference Protocol's binary tensors arrive as raw bytes
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(field, "not valid base64") from None


@dataclass(frozen=True)
class Preprocessor:
    """Built once per replica from an artifact's directory and ``preprocessing`` record."""

    modality: str
    settings: dict[str, Any]
    artifact_dir: str
    max_text_chars: int = 2000
    limits: InputLimits = dataclasses.field(default_factory=InputLimits)

    def __post_init__(self) -> None:
        # The record comes from the artifact: hold it to the bounds of the config it was made from
        # (an image size of 10**6 would make every request allocate terabytes).
        from raylm.config import AudioDataConfig, ImageDataConfig, TextDataConfig

        section = {"image": ImageDataConfig, "audio": AudioDataConfig, "text": TextDataConfig}[self.modality]
        section.model_validate({k: self.settings[k] for k in section.model_fields if k in self.settings})

    def __call__(self, items: list[str] | list[bytes]) -> dict[str, np.ndarray]:
        field = {"text": "text", "image": "image", "audio": "audio"}[self.modality]
        return getattr(self, f"_{self.modality}")(items, field)

    def warm_up(self) -> None:
        """Run once on a synthetic item: imports (transformers, librosa load lazily and are not safe to
        first-import from several threads at once) and the tokenizer load happen before traffic."""
        if self.modality == "text":
            self(["warm up"])
            return
        if self.modality == "image":
            import cv2

            data = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
        else:
            import io

            import soundfile

            buf = io.BytesIO()
            soundfile.write(buf, np.zeros(800, np.float32), 8000, format="WAV")
            data = buf.getvalue()
        self([base64.b64encode(data).decode()])

    def _text(self, texts: list[str], field: str) -> dict[str, np.ndarray]:
        self.check_text(texts, field)
        return self.encode_text(texts)

    def check_text(self, texts: list[str], field: str = "text") -> None:
        """What a text request must satisfy; the tokenizer itself runs later, once per batch (encode_text)."""
        for i, text in enumerate(texts):
            where = field if len(texts) == 1 else f"{field}[{i}]"
            if not text.strip():
                raise InputError(where, "empty text")
            if len(text) > self.max_text_chars:
                raise InputError(where, f"{len(text)} characters, more than serve.max_text_chars={self.max_text_chars}")

    def encode_text(self, texts: list[str]) -> dict[str, np.ndarray]:
        from raylm.compress.artifact import confined
        from raylm.data.text import tokenize

        tokenizer = str(confined(Path(self.artifact_dir), self.settings["tokenizer"], "preprocessing.tokenizer"))
        return tokenize(texts, tokenizer, int(self.settings["max_length"]))

    def _image(self, images: list[str], field: str) -> dict[str, np.ndarray]:
        from raylm.data.images import decode_image

        out = []
        for i, value in enumerate(images):
            where = field if len(images) == 1 else f"{field}[{i}]"
            try:
                out.append(decode_image(_b64(value, where), int(self.settings["size"]), self.limits))
            except InputError:  # already names its field (e.g. not valid base64)
                raise
            except ValueError as err:
                raise InputError(where, str(err)) from None
        return {"image": np.stack(out)}

    def _audio(self, clips: list[str], field: str) -> dict[str, np.ndarray]:
        from raylm.config import AudioDataConfig
        from raylm.data.audio import decode_audio, mfcc_frames

        cfg = AudioDataConfig(**{k: self.settings[k] for k in AudioDataConfig.model_fields})
        out = []
        for i, value in enumerate(clips):
            where = field if len(clips) == 1 else f"{field}[{i}]"
            try:
                audio = decode_audio(_b64(value, where), cfg.sample_rate, clip_seconds=cfg.clip_seconds, limits=self.limits)
                out.append(mfcc_frames(audio, cfg))
            except InputError:  # already names its field (e.g. not valid base64)
                raise
            except ValueError as err:
                raise InputError(where, str(err)) from None
        return {"frames": np.stack(out)}
