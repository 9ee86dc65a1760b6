"""``task`` and ``data``: what is learned, from which files, decoded how (and the decoders' limits)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from raylm.config.section import Section

# With its data section below, a new modality's whole config (raylm/data/modality.py has the rest).
Modality = Literal["image", "text", "audio"]


class InputLimits(Section):
    """What the image and audio decoders accept, checked from a file's header before it is decoded.

    The same limits apply to training data (``data.limits``) and to requests (``serve.limits``):
    a decompression bomb or a file of an unexpected format is refused, naming the reason.
    """

    image_formats: list[Literal["png", "jpeg", "bmp", "webp", "tiff"]] = Field(
        ["png", "jpeg", "bmp", "webp"], min_length=1, description="told by magic bytes, not by the file name")
    max_image_pixels: int = Field(16_777_216, ge=64, description="width x height as the header declares it")
    audio_formats: list[Literal["wav", "flac", "ogg"]] = Field(["wav", "flac", "ogg"], min_length=1)
    min_sample_rate: int = Field(4000, ge=1, description="Hz, as the header declares it")
    max_sample_rate: int = Field(192_000, ge=1)
    max_channels: int = Field(8, ge=1, le=256)
    max_audio_seconds: float = Field(60.0, gt=0, description="longer files are refused (only the clip is decoded)")

    @model_validator(mode="after")
    def _rate_range(self) -> InputLimits:
        if self.min_sample_rate > self.max_sample_rate:
            raise ValueError(f"min_sample_rate ({self.min_sample_rate}) exceeds max_sample_rate ({self.max_sample_rate})")
        return self


class TaskConfig(Section):
    modality: Modality
    # None: taken from the data (class folder names, or the distinct values of the label column).
    labels: list[str] | None = None

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None:
            if len(labels) < 2:
                raise ValueError("needs at least 2 labels")
            if len(set(labels)) != len(labels):
                raise ValueError("labels must be distinct")
        return labels


class ImageDataConfig(Section):
    size: int = Field(32, ge=8, le=1024, description="square side images are resized to")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One decoded sample, the model's input: NHWC RGB (the models and serving read it from here)."""
        return (self.size, self.size, 3)


class TextDataConfig(Section):
    text_column: str = "text"
    max_length: int = Field(64, ge=8, le=4096, description="tokens per sequence (padded/truncated)")
    tokenizer: str | None = Field(
        None, description="HF tokenizer name or dir; default: model.pretrained, else bundled MiniLM"
    )

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.max_length,)  # token ids, padded or truncated


class AudioDataConfig(Section):
    sample_rate: int = Field(16000, ge=4000, le=96000)
    clip_seconds: float = Field(1.0, gt=0, le=60)
    n_mfcc: int = Field(22, ge=4, le=128, description="MFCC coefficients per frame (article: 22)")
    hop_length: int = Field(256, ge=32, le=4096)
    normalize: bool = Field(True, description="per-clip cepstral mean/variance normalization")

    @property
    def frames(self) -> int:
        # librosa's centred STFT yields 1 + samples // hop frames.
        return 1 + int(round(self.clip_seconds * self.sample_rate)) // self.hop_length

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.frames, self.n_mfcc)  # MFCC frames over time


class DataConfig(Section):
    # Exactly one source: a registered demo dataset (generated offline on first use) or a path.
    name: str | None = Field(None, description="registered dataset, e.g. digits, topics, spoken_digits")
    path: str | None = Field(None, description="class-folder dir, or a parquet/csv/jsonl file or dir")
    format: Literal["auto", "folder", "parquet", "csv", "jsonl"] = "auto"
    validation_path: str | None = Field(None, description="separate validation data; else a split")
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    label_column: str = "label"
    image_column: str = Field("image", description="table column holding encoded image bytes (parquet)")
    audio_column: str = Field("audio", description="table column holding encoded audio bytes (parquet)")
    on_bad_input: Literal["skip", "fail"] = Field(
        "skip", description="a file or row that does not decode (or has an empty text/label): skip it and list it "
        "in <run>/data_report.json, or stop at the first one")
    max_bad_fraction: float = Field(
        0.1, ge=0, le=1, description="skip: refuse the data when more than this fraction of it is bad")
    samples_per_class: int = Field(0, ge=0, description="demo datasets only; 0 = the dataset's default")
    cache_dir: str = Field("~/.cache/raylm", description="where demo datasets are generated")
    materialize: bool | Literal["auto"] = Field(
        "auto", description="keep decoded samples in Ray's object store after one pass, so later epochs "
        "skip reading and decoding; auto: when the decoded splits fit in data.materialize_share of the object store")
    materialize_share: float = Field(
        0.25, gt=0, le=1, description="data.materialize=auto: the share of Ray's object store the decoded splits may take")
    # Large sharded sets (raylm/data/shards.py): shuffled without holding the set anywhere.
    shuffle_files: bool = Field(
        True, description="read the training files (shards) in a new seeded order every epoch")
    shuffle_buffer: int = Field(
        0, ge=0, description="rows in each training worker's local shuffle buffer; 0 = max(4 x train.batch_size, 256)")
    block_mib: int = Field(
        0, ge=0, le=1024, description="Ray Data's target block size (MiB) for this data; 0 = Ray's default (128), "
        "or smaller where data.stream_memory holds fewer than two blocks per training worker and stage. "
        "Blocks of a few MiB keep memory flat when the object store is small")
    stream_memory: float = Field(
        0.5, gt=0, description="the most of Ray's object store a streamed (not materialized) dataset's read -> "
        "decode -> augment -> split pipeline may hold: a share of the store (<= 1, e.g. 0.5) or MB (> 1, e.g. 64); "
        "Ray Data holds back reads beyond it instead of spilling to disk. A sweep's trials streaming at once share "
        "a share between them (raylm/data/shards.py, docs/large-data.md)")
    prefetch_batches: int = Field(
        0, ge=0, le=64, description="training batches each worker's Ray Data iterator prepares ahead of the one it "
        "trains on (streamed and kept-and-split sets); 0 = as many as fit in 64 MiB of decoded samples, 2 to 8")
    check: bool = Field(
        True, description="decode every sample once before training and list the bad ones (raylm data check); "
        "false skips that pass for very large sets: bad samples are still left out, but not listed")
    image: ImageDataConfig = ImageDataConfig()
    text: TextDataConfig = TextDataConfig()
    audio: AudioDataConfig = AudioDataConfig()
    limits: InputLimits = InputLimits()

    @field_validator("path", "validation_path")
    @classmethod
    def _path_exists(cls, value: str | None) -> str | None:
        if value is None or "://" in value:
            return value  # remote URIs are checked by Ray Data when read
        resolved = Path(value).expanduser()
        if not resolved.exists():
            raise ValueError(f"no such file or directory: {resolved}")
        return str(resolved.resolve())

    @field_validator("stream_memory")
    @classmethod
    def _stream_memory_holds_blocks(cls, value: float, info) -> float:
        # Below two blocks a read and a decode cannot both hold one: the pipeline creeps a block at a
        # time. (A share is resolved against the store once Ray runs: raylm/data/shards.py.) block_mib=0
        # fits the block size to the budget there (auto_block_bytes).
        block_mib = info.data.get("block_mib")
        if not block_mib and 1 < value < 2:  # the fitted blocks' floor: 1 MiB (raylm/data/shards.py MIN_AUTO_BLOCK)
            raise ValueError(f"{value:g} MB holds fewer than two blocks of 1 MiB, the smallest data.block_mib=0 fits "
                             "to the budget; give at least 2, or a share of the object store (<= 1)")
        if block_mib and value > 1 and value < 2 * block_mib:
            raise ValueError(f"{value:g} MB holds fewer than two blocks of data.block_mib ({block_mib} MiB); "
                             "give at least twice the block size, or a share of the object store (<= 1)")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        # Every example config names a demo set; a data.path given on top of one is the user's own
        # data, so it wins (the CLI prints a notice) instead of asking for data.name=null.
        if self.name is not None and self.path is not None:
            object.__setattr__(self, "name", None)
        return self
