"""data/'s third floor: one class per modality, what the stages need to know about an input kind.

Data loading, the data check, augmentation, the artifact's preprocessing record, Serve's request
bodies and the pipeline's smoke request all ask ``modality_record(cfg.task.modality)`` for the
:class:`Modality` instead of branching on the modality's name. Adding a modality is a class here (or
in its own module that calls :func:`register_modality`), a ``data.<name>`` config section and a
model: see the README's "Adding a modality".

A modality's methods call the files below it (the decoders ``images.py`` / ``audio.py`` / ``text.py``,
the ops ``augment_ops.py``, the drawings ``preview_tiles.py``, the rules ``rules.py``); nothing here
imports a file above it (the build floor: ``data/__init__.py``, ``check.py``, ``augment.py``, ...).
Heavy libraries (OpenCV, librosa, transformers) are imported inside the methods, so importing this
module stays cheap; an instance holds no state, so it travels to Ray workers by its name.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import StringConstraints

from raylm.data.files import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, label_of_file
from raylm.data.rules import label_text

if TYPE_CHECKING:
    from raylm.config import RaylmConfig

# The batch columns each modality's models take, in call order; filled by register_modality.
MODEL_INPUTS: dict[str, tuple[str, ...]] = {}
MODALITIES: dict[str, Modality] = {}

NonEmptyText = Annotated[str, StringConstraints(min_length=1, strip_whitespace=False)]
Base64 = Annotated[str, StringConstraints(min_length=1)]


@runtime_checkable
class Modality(Protocol):
    """What every stage may ask of an input kind. The optional parts (``augment``, ``augment_extra``,
    ``decode_identity``, ``preview``) are None on a modality without them."""

    name: str  # task.modality; also the request field, the v2 input name and the cfg.data / cfg.augment section
    inputs: tuple[str, ...]  # batch columns the models take, in call order
    value_column_key: str  # config key naming a table's input column
    extensions: tuple[str, ...]  # files a class folder holds; () = tables only
    request_item: Any  # pydantic type of one request item
    request_doc: str
    request_bytes: bool  # request items are base64 of the stored bytes (else sent as they are stored)
    request_example: Any  # an item for documentation (the run report's curl line); bytes: a file of extensions[0]
    batched_encoding: bool  # tokenized modalities encode whole batches (serving: once per model call)
    augment: Callable[[dict, np.ndarray, Any, dict], dict] | None  # (batch, seeds, policy, extra) -> changed columns
    augment_extra: Callable[[RaylmConfig], dict[str, Any]] | None  # e.g. the tokenizer's special ids
    decode_identity: Callable[[RaylmConfig, dict], dict] | None  # what else decides decoded data
    preview: Callable[[RaylmConfig, dict, list[dict], dict], list] | None  # ``raylm augment preview`` rows/lines

    def decode(self, value: Any, settings: Any, limits: Any = None) -> Any:
        """Stored value (file bytes, a table cell) -> model input; ValueError with the reason. The acceptance
        rule of the data check, of training's decode stage and of serving."""

    def decode_stored(self, value: Any, settings: Any, limits: Any = None) -> Any:
        """Training's per-file decode: ``decode``, or the part of it that is per file (``finish_batch`` does the
        rest on the stacked batch at once)."""

    def finish_batch(self, stacked: np.ndarray) -> np.ndarray: ...

    def prepare_stage(self, cfg: RaylmConfig, label_column: str | None) -> tuple[Callable[..., dict], dict[str, Any]]:
        """The Ray Data batch UDF and its kwargs that turn rows into model inputs and label ids."""

    def preprocessing(self, cfg: RaylmConfig) -> dict[str, Any]:
        """Written into the artifact; serving reads it back."""

    def warm_up_item(self, settings: Any) -> Any:
        """One synthetic request item (serving's warm-up)."""

    def settings(self, cfg: RaylmConfig) -> Any: ...

    def sample_shape(self, settings: Any) -> tuple[int, ...]: ...

    def settings_type(self) -> type: ...

    def value_column(self, cfg: RaylmConfig) -> str: ...

    def to_request(self, stored: Any) -> Any: ...


# The name serve/ and the report annotate with.
ModalityRecord = Modality


class BaseModality:
    """What the three modalities share; a subclass sets the class attributes and the methods it has."""

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    value_column_key: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]] = ()
    request_item: ClassVar[Any] = Base64
    request_doc: ClassVar[str] = ""
    request_bytes: ClassVar[bool] = True
    request_example: ClassVar[Any] = None
    batched_encoding: ClassVar[bool] = False
    augment: ClassVar[Any] = None  # a subclass with augmentation defines the methods instead
    augment_extra: ClassVar[Any] = None
    decode_identity: ClassVar[Any] = None
    preview: ClassVar[Any] = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def settings(self, cfg: RaylmConfig) -> Any:
        return getattr(cfg.data, self.name)

    def decode_stored(self, value: Any, settings: Any, limits: Any = None) -> Any:
        return self.decode(value, settings, limits)  # all of the decode is per file unless a modality splits it

    @staticmethod
    def finish_batch(stacked: np.ndarray) -> np.ndarray:
        return stacked

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

    def prepare_stage(self, cfg: RaylmConfig, label_column: str | None) -> tuple[Callable[..., dict], dict[str, Any]]:
        """Files or cells decoded one by one (``decode_accepted``), as serving decodes them."""
        return decode_accepted, {"modality": self.name, "settings": self.settings(cfg), "label_column": label_column,
                                 "limits": cfg.data.limits,
                                 "bytes_column": "bytes" if label_column is None else self.value_column(cfg)}


def register_modality(record: Modality) -> Modality:
    if record.name in MODALITIES and MODALITIES[record.name] is not record:
        raise KeyError(f"modality {record.name!r} is registered twice")
    MODALITIES[record.name] = record
    MODEL_INPUTS[record.name] = record.inputs
    return record


def modality_record(name: str) -> Modality:
    try:
        return MODALITIES[name]
    except KeyError:
        raise ValueError(f"task.modality: unknown modality {name!r}; known: {sorted(MODALITIES)}") from None


def decode_accepted(batch: dict, *, modality: str, settings, label_index: dict[str, int], bytes_column: str,
                    label_column: str | None = None, root: str | None = None, limits=None) -> dict[str, np.ndarray]:
    """Ray Data UDF: encoded bytes -> model inputs and label ids, leaving out what the check refused
    (the same rule, ``rules.sample_problem`` on the modality's ``decode``); a class folder's label is its
    top-level folder under ``root``."""
    record = modality_record(modality)
    raw = batch[label_column] if label_column else [label_of_file(p, root) for p in batch["path"]]
    inputs, labels = [], []
    for data, raw_label in zip(batch[bytes_column], raw):
        label = label_text(raw_label)
        if label not in label_index:
            continue
        try:
            inputs.append(record.decode_stored(data, settings, limits))
        except Exception:  # listed in data_report.json by the check (skip mode)
            continue
        labels.append(label_index[label])
    key = record.inputs[0]
    if not inputs:
        return {key: np.zeros((0, *record.sample_shape(settings)), np.float32), "label": np.zeros(0, np.int64)}
    # A modality that decodes each file only part of the way finishes the whole batch at once.
    return {key: record.finish_batch(np.stack(inputs)), "label": np.asarray(labels, np.int64)}


def _bytes(value: Any) -> bytes:
    if value is None or len(value) == 0:
        raise ValueError("empty (0 bytes)")
    return bytes(value)


# ---------------------------------------------------------------- image


class ImageModality(BaseModality):
    name = "image"
    inputs = ("image",)
    value_column_key = "data.image_column"
    extensions = IMAGE_EXTENSIONS
    request_doc = "base64 PNG/JPEG bytes, or a list of them"

    def decode(self, value: Any, settings: Any, limits: Any = None) -> np.ndarray:
        from raylm.data.images import decode_image

        return decode_image(_bytes(value), settings.size, *([limits] if limits is not None else []))

    @staticmethod
    def decode_stored(value: Any, settings: Any, limits: Any = None) -> np.ndarray:
        """Training's per-file half of :meth:`decode` (the same checks): uint8 BGR pixels at the model's size,
        4x smaller than the float32 image; :meth:`finish_batch` scales a stacked batch of them in one pass."""
        from raylm.data.images import decode_resized

        return decode_resized(_bytes(value), settings.size, *([limits] if limits is not None else []))

    @staticmethod
    def finish_batch(stacked: np.ndarray) -> np.ndarray:
        from raylm.data.images import scale_rgb

        return scale_rgb(stacked)

    def augment(self, batch: dict, seeds: np.ndarray, policy: Any, extra: dict) -> dict:
        from raylm.data.augment_ops import augment_images

        return {"image": augment_images(batch["image"], seeds, policy)}

    def preprocessing(self, cfg: RaylmConfig) -> dict[str, Any]:
        return {"function": "raylm.data.images.preprocess_image", "size": cfg.data.image.size,
                "color": "RGB", "layout": "NHWC", "scale": 1 / 255}

    def warm_up_item(self, settings: Any) -> str:
        import cv2

        return base64.b64encode(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()).decode()

    def preview(self, cfg: RaylmConfig, clean: dict, views: list[dict], extra: dict) -> list:
        from raylm.data.preview_tiles import image_rows

        return image_rows(cfg, clean, views, extra)


# ---------------------------------------------------------------- audio


class AudioModality(BaseModality):
    name = "audio"
    inputs = ("frames",)
    value_column_key = "data.audio_column"
    extensions = AUDIO_EXTENSIONS
    request_doc = "base64 WAV/FLAC/OGG bytes, or a list of them"

    def decode(self, value: Any, settings: Any, limits: Any = None) -> np.ndarray:
        from raylm.data.audio import decode_audio, mfcc_frames

        extra = {"limits": limits} if limits is not None else {}
        return mfcc_frames(decode_audio(_bytes(value), settings.sample_rate, clip_seconds=settings.clip_seconds,
                                        **extra), settings)

    def augment(self, batch: dict, seeds: np.ndarray, policy: Any, extra: dict) -> dict:
        from raylm.data.augment_ops import augment_frames

        return {"frames": augment_frames(batch["frames"], seeds, policy)}

    def preprocessing(self, cfg: RaylmConfig) -> dict[str, Any]:
        return {"function": "raylm.data.audio.mfcc_frames", **cfg.data.audio.model_dump(mode="json"),
                "frames": cfg.data.audio.frames, "layout": "(frames, n_mfcc)"}

    def warm_up_item(self, settings: Any) -> str:
        import io

        import soundfile

        buf = io.BytesIO()
        soundfile.write(buf, np.zeros(800, np.float32), 8000, format="WAV")
        return base64.b64encode(buf.getvalue()).decode()

    def preview(self, cfg: RaylmConfig, clean: dict, views: list[dict], extra: dict) -> list:
        from raylm.data.preview_tiles import frame_rows

        return frame_rows(cfg, clean, views, extra)


# ---------------------------------------------------------------- text


class TextModality(BaseModality):
    name = "text"
    inputs = ("input_ids", "attention_mask")
    value_column_key = "data.text.text_column"
    request_item = NonEmptyText
    request_doc = "one text or a list of texts"
    request_bytes = False
    request_example = "an example sentence"
    batched_encoding = True

    def decode(self, value: Any, settings: Any = None, limits: Any = None) -> str:
        from raylm.data.text import text_item

        return text_item(value, settings, limits)

    def prepare_stage(self, cfg: RaylmConfig, label_column: str | None) -> tuple[Callable[..., dict], dict[str, Any]]:
        from raylm.data.text import tokenize_batch, tokenizer_source

        return tokenize_batch, {"tokenizer_source": tokenizer_source(cfg), "max_length": cfg.data.text.max_length,
                                "text_column": cfg.data.text.text_column, "label_column": label_column}

    def augment(self, batch: dict, seeds: np.ndarray, policy: Any, extra: dict) -> dict:
        from raylm.data.augment_ops import augment_tokens

        ids, mask = augment_tokens(batch["input_ids"], batch["attention_mask"], seeds, policy, **extra)
        return {"input_ids": ids, "attention_mask": mask}

    def augment_extra(self, cfg: RaylmConfig) -> dict[str, Any]:
        from raylm.data.text import text_special_ids, tokenizer_source

        return text_special_ids(tokenizer_source(cfg))

    def decode_identity(self, cfg: RaylmConfig, parts: dict) -> dict:
        from raylm.data.text import load_tokenizer, tokenizer_source

        # What the tokenizer does, not where it lies: a trial's compression step names the copy
        # saved in its checkpoint, the sweep the bundled original; a path key decoded (and, for a
        # table without checked labels, shuffled) everything again inside the trial.
        del parts["data"]["text"]["tokenizer"]
        tokenizer = load_tokenizer(tokenizer_source(cfg))
        backend = getattr(tokenizer, "backend_tokenizer", None)
        return parts | {"tokenizer": backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items())}

    def preprocessing(self, cfg: RaylmConfig) -> dict[str, Any]:
        return {"function": "raylm.data.text.tokenize", "tokenizer": "tokenizer",
                "max_length": cfg.data.text.max_length, "padding": "max_length",
                "text_column": cfg.data.text.text_column}

    def warm_up_item(self, settings: Any) -> str:
        return "warm up"

    def preview(self, cfg: RaylmConfig, clean: dict, views: list[dict], extra: dict) -> list:
        from raylm.data.preview_tiles import text_lines

        return text_lines(cfg, clean, views, extra)


IMAGE = register_modality(ImageModality())
AUDIO = register_modality(AudioModality())
TEXT = register_modality(TextModality())
