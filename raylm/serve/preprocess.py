"""Request items -> model inputs, with the very functions training used (raylm.data).

The artifact's ``preprocessing`` record says which function and settings the model was trained
with; serving calls the same function with the same settings, so a served image is resized,
coloured and scaled exactly as the training images were.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raylm.config import InputLimits
from raylm.data.modality import ModalityRecord, modality_record
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
    """Built once per replica from an artifact's directory and ``preprocessing`` record.

    A request's items are prepared when it arrives (``prepare``: checked, and decoded where the modality
    decodes item by item); the model's feeds are built once per model call from the payloads of every
    request in it (``feeds``: tokenized modalities tokenize the whole batch at once)."""

    modality: str
    settings: dict[str, Any]
    artifact_dir: str
    max_text_chars: int = 2000
    limits: InputLimits = dataclasses.field(default_factory=InputLimits)
    decoder_settings: Any = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        # The record comes from the artifact: hold it to the bounds of the config it was made from
        # (an image size of 10**6 would make every request allocate terabytes).
        section = self.record.settings_type()
        settings = section.model_validate({k: self.settings[k] for k in section.model_fields if k in self.settings})
        object.__setattr__(self, "decoder_settings", settings)  # what the modality's decoder reads

    @property
    def record(self) -> ModalityRecord:
        return modality_record(self.modality)

    @property
    def decodes_items(self) -> bool:
        """Whether ``prepare`` decodes (CPU work worth a thread) rather than only checking."""
        return not self.record.batched_encoding

    def __call__(self, items: list[Any]) -> dict[str, np.ndarray]:
        return self.feeds([self.prepare(items)])

    def warm_up(self) -> None:
        """Run once on a synthetic item: imports (transformers, librosa load lazily and are not safe to
        first-import from several threads at once) and the tokenizer load happen before traffic."""
        self([self.record.warm_up_item(self.decoder_settings)])

    def prepare(self, items: list[Any]) -> Any:
        """One request's items -> its payload for ``feeds``; InputError naming the item. Every item passes
        the modality record's ``decode``, the acceptance rule training's data went through."""
        record, settings = self.record, self.decoder_settings
        out = []
        for i, value in enumerate(items):
            where = self.modality if len(items) == 1 else f"{self.modality}[{i}]"
            try:
                out.append(record.decode(_b64(value, where) if record.request_bytes else value, settings, self.limits))
            except InputError:  # already names its field (e.g. not valid base64)
                raise
            except ValueError as err:
                raise InputError(where, str(err)) from None
            if isinstance(out[-1], str) and len(out[-1]) > self.max_text_chars:
                raise InputError(where, f"{len(out[-1])} characters, more than serve.max_text_chars={self.max_text_chars}")
        if record.batched_encoding:  # only checked here: the model call's batch is encoded at once (feeds)
            return out
        return {record.inputs[0]: np.stack(out)}

    def feeds(self, payloads: list[Any]) -> dict[str, np.ndarray]:
        """The model's inputs for the payloads of the requests in one model call, in order."""
        if self.record.batched_encoding:
            return self.encode_text([text for texts in payloads for text in texts])
        return {name: np.concatenate([p[name] for p in payloads]) for name in self.record.inputs}

    @functools.cached_property
    def tokenizer_dir(self) -> str:
        """The artifact's tokenizer, checked to be inside it once per replica (the check's lstat per path
        part, per request, was 3 % of a replica's CPU under load)."""
        from raylm.artifacts import confined

        return str(confined(Path(self.artifact_dir), self.settings["tokenizer"], "preprocessing.tokenizer"))

    def encode_text(self, texts: list[str]) -> dict[str, np.ndarray]:
        from raylm.data.text import tokenize

        return tokenize(texts, self.tokenizer_dir, int(self.settings["max_length"]))

