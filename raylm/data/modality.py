"""One record per modality: what the stages need to know about an input kind, in one place.

Data loading, the data check, augmentation, the artifact's preprocessing record, Serve's request
bodies and the pipeline's smoke request all ask ``modality_record(cfg.task.modality)`` instead of
branching on the modality's name. Adding a modality is a record here (or in its own module that
calls :func:`register_modality`), a ``data.<name>`` config section and a model: see the README's
"Adding a modality".

Heavy libraries (OpenCV, librosa, transformers) are imported inside the record's functions, so
importing this module stays cheap; records hold plain functions, never bound state.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import StringConstraints

if TYPE_CHECKING:
    from raylm.config import RaylmConfig

# The batch columns each modality's models take, in call order; filled by register_modality.
MODEL_INPUTS: dict[str, tuple[str, ...]] = {}
MODALITIES: dict[str, ModalityRecord] = {}

NonEmptyText = Annotated[str, StringConstraints(min_length=1, strip_whitespace=False)]
Base64 = Annotated[str, StringConstraints(min_length=1)]


@dataclass(frozen=True)
class ModalityRecord:
    name: str  # task.modality; also the request field, the v2 input name and the cfg.data / cfg.augment section
    inputs: tuple[str, ...]  # batch columns the models take, in call order
    value_column_key: str  # config key naming a table's input column
    extensions: tuple[str, ...]  # files a class folder holds; () = tables only
    # Stored value (file bytes, a table cell) -> model input; ValueError with the reason. The acceptance
    # rule of the data check, of training's decode stage and of serving.
    decode: Callable[[Any, Any, Any], Any]
    # (cfg, label_column) -> the Ray Data batch UDF and its kwargs that turn rows into model inputs.
    prepare_stage: Callable[[RaylmConfig, str | None], tuple[Callable[..., dict], dict[str, Any]]]
    preprocessing: Callable[[RaylmConfig], dict[str, Any]]  # written into the artifact; serving reads it back
    request_item: Any  # pydantic type of one request item
    request_doc: str
    request_bytes: bool  # request items are base64 of the stored bytes (else sent as they are stored)
    warm_up_item: Callable[[Any], Any]  # data settings -> one synthetic request item (serving's warm-up)
    request_example: Any = None  # an item for documentation (the run report's curl line); bytes: a file of extensions[0]
    # Tokenized modalities encode whole batches (serving: once per model call), not item by item.
    batched_encoding: bool = False
    # (batch, per-row seeds, policy, extra) -> the changed columns; None: no augmentation (no augment.<name> section)
    augment: Callable[[dict, np.ndarray, Any, dict], dict] | None = None
    augment_extra: Callable[[RaylmConfig], dict[str, Any]] | None = None  # e.g. the tokenizer's special ids
    decode_identity: Callable[[RaylmConfig, dict], dict] | None = None  # what else decides decoded data
    # ``raylm augment preview``: (cfg, clean batch, augmented batches, extra) -> rows of image tiles, or text lines.
    preview: Callable[[RaylmConfig, dict, list[dict], dict], list] | None = None

    def settings(self, cfg: RaylmConfig) -> Any:
        return getattr(cfg.data, self.name)

    @staticmethod
    def sample_shape(settings: Any) -> tuple[int, ...]:
        """One decoded sample's shape: its data section (config/data.py) says, so models read it without data/."""
        return settings.sample_shape

    def settings_type(self) -> type:
        from raylm.config import DataConfig

        return DataConfig.model_fields[self.name].annotation

    def value_column(self, cfg: RaylmConfig) -> str:
        value: Any = cfg
        for part in self.value_column_key.split("."):
            value = getattr(value, part)
        return value

    def to_request(self, stored: Any) -> Any:
        """A stored value (file bytes, table cell) as a request item."""
        return base64.b64encode(bytes(stored)).decode() if self.request_bytes else stored


def register_modality(record: ModalityRecord) -> ModalityRecord:
    if record.name in MODALITIES and MODALITIES[record.name] is not record:
        raise KeyError(f"modality {record.name!r} is registered twice")
    MODALITIES[record.name] = record
    MODEL_INPUTS[record.name] = record.inputs
    return record


def modality_record(name: str) -> ModalityRecord:
    try:
        return MODALITIES[name]
    except KeyError:
        raise ValueError(f"task.modality: unknown modality {name!r}; known: {sorted(MODALITIES)}") from None


def _bytes(value: Any) -> bytes:
    if value is None or len(value) == 0:
        raise ValueError("empty (0 bytes)")
    return bytes(value)


def _decoded_stage(cfg: RaylmConfig, label_column: str | None) -> tuple[Callable[..., dict], dict[str, Any]]:
    from raylm.data import decode_accepted

    record = modality_record(cfg.task.modality)
    return decode_accepted, {"modality": record.name, "settings": record.settings(cfg), "label_column": label_column,
                             "limits": cfg.data.limits,
                             "bytes_column": "bytes" if label_column is None else record.value_column(cfg)}


def _preview(fn_name: str) -> Callable[[RaylmConfig, dict, list[dict], dict], list]:
    def preview(cfg: RaylmConfig, clean: dict, views: list[dict], extra: dict) -> list:
        from raylm.data import augment_preview

        return getattr(augment_preview, fn_name)(cfg, clean, views, extra)

    return preview


def _augment_column(fn_name: str, column: str) -> Callable[[dict, np.ndarray, Any, dict], dict]:
    def augment(batch: dict, seeds: np.ndarray, policy: Any, extra: dict) -> dict:
        from raylm.data import augment

        return {column: getattr(augment, fn_name)(batch[column], seeds, policy)}

    return augment


# ---------------------------------------------------------------- image


def _decode_image(value: Any, settings: Any, limits: Any = None) -> np.ndarray:
    from raylm.data.images import decode_image

    return decode_image(_bytes(value), settings.size, *([limits] if limits is not None else []))


def _png_item(settings: Any) -> str:
    import cv2

    return base64.b64encode(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()).decode()


IMAGE = register_modality(ModalityRecord(
    name="image", inputs=("image",), value_column_key="data.image_column",
    extensions=(".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"),
    decode=_decode_image, prepare_stage=_decoded_stage,
    augment=_augment_column("augment_images", "image"),
    preprocessing=lambda cfg: {"function": "raylm.data.images.preprocess_image", "size": cfg.data.image.size,
                               "color": "RGB", "layout": "NHWC", "scale": 1 / 255},
    request_item=Base64, request_doc="base64 PNG/JPEG bytes, or a list of them", request_bytes=True,
    warm_up_item=_png_item, preview=_preview("image_rows"),
))


# ---------------------------------------------------------------- audio


def _decode_audio(value: Any, settings: Any, limits: Any = None) -> np.ndarray:
    from raylm.data.audio import decode_audio, mfcc_frames

    extra = {"limits": limits} if limits is not None else {}
    return mfcc_frames(decode_audio(_bytes(value), settings.sample_rate, clip_seconds=settings.clip_seconds, **extra),
                       settings)


def _wav_item(settings: Any) -> str:
    import io

    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.zeros(800, np.float32), 8000, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


AUDIO = register_modality(ModalityRecord(
    name="audio", inputs=("frames",), value_column_key="data.audio_column", extensions=(".wav", ".flac", ".ogg"),
    decode=_decode_audio, prepare_stage=_decoded_stage,
    augment=_augment_column("augment_frames", "frames"),
    preprocessing=lambda cfg: {"function": "raylm.data.audio.mfcc_frames", **cfg.data.audio.model_dump(mode="json"),
                               "frames": cfg.data.audio.frames, "layout": "(frames, n_mfcc)"},
    request_item=Base64, request_doc="base64 WAV/FLAC/OGG bytes, or a list of them", request_bytes=True,
    warm_up_item=_wav_item, preview=_preview("frame_rows"),
))


# ---------------------------------------------------------------- text


def _text_item(value: Any, settings: Any = None, limits: Any = None) -> str:
    if value is None or not str(value).strip():
        raise ValueError("empty text")
    return str(value)


def _tokenize_stage(cfg: RaylmConfig, label_column: str | None) -> tuple[Callable[..., dict], dict[str, Any]]:
    from raylm.data.text import tokenize_batch
    from raylm.data.text import tokenizer_source

    return tokenize_batch, {"tokenizer_source": tokenizer_source(cfg), "max_length": cfg.data.text.max_length,
                            "text_column": cfg.data.text.text_column, "label_column": label_column}


def _augment_tokens(batch: dict, seeds: np.ndarray, policy: Any, extra: dict) -> dict:
    from raylm.data.augment import augment_tokens

    ids, mask = augment_tokens(batch["input_ids"], batch["attention_mask"], seeds, policy, **extra)
    return {"input_ids": ids, "attention_mask": mask}


def _text_special_ids(cfg: RaylmConfig) -> dict[str, Any]:
    from raylm.data.augment import text_special_ids
    from raylm.data.text import tokenizer_source

    return text_special_ids(tokenizer_source(cfg))


def _tokenizer_identity(cfg: RaylmConfig, parts: dict) -> dict:
    from raylm.data.text import load_tokenizer, tokenizer_source

    # What the tokenizer does, not where it lies: a trial's compression step names the copy
    # saved in its checkpoint, the sweep the bundled original; a path key decoded (and, for a
    # table without checked labels, shuffled) everything again inside the trial.
    del parts["data"]["text"]["tokenizer"]
    tokenizer = load_tokenizer(tokenizer_source(cfg))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return parts | {"tokenizer": backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items())}


TEXT = register_modality(ModalityRecord(
    name="text", inputs=("input_ids", "attention_mask"), value_column_key="data.text.text_column", extensions=(),
    decode=_text_item, prepare_stage=_tokenize_stage,
    augment=_augment_tokens, augment_extra=_text_special_ids, decode_identity=_tokenizer_identity,
    preprocessing=lambda cfg: {"function": "raylm.data.text.tokenize", "tokenizer": "tokenizer",
                               "max_length": cfg.data.text.max_length, "padding": "max_length",
                               "text_column": cfg.data.text.text_column},
    request_item=NonEmptyText, request_doc="one text or a list of texts", request_bytes=False,
    warm_up_item=lambda settings: "warm up", request_example="an example sentence", batched_encoding=True, preview=_preview("text_lines"),
))
