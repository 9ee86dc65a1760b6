"""The one typed config of raylm: a section per stage, loaded from YAML plus ``key=value`` overrides.

Everything is validated here, on the driver, before Ray starts, so a typo costs a second and not
a cluster launch. Every leaf is a plain value so that a Tune search space can address it by its
dotted path (``train.lr``, ``data.validation_fraction``).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raylm.errors import RaylmError

Modality = Literal["image", "text", "audio"]


class ConfigError(RaylmError):
    """A config that cannot run; the message names every offending field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# A name that becomes one directory under a run: never a path, never hidden, never "..".
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def plain_name(value: str) -> str:
    """``value`` if it is a plain directory name (letters, digits, ``._-``; not hidden, no ``/``)."""
    if not _PLAIN_NAME.fullmatch(value):
        raise ValueError("must be a plain directory name of letters, digits, '.', '_' and '-', "
                         "not starting with '.'")
    return value


PlainName = Annotated[str, AfterValidator(plain_name)]


class InputLimits(_Section):
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


class TaskConfig(_Section):
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


class ImageDataConfig(_Section):
    size: int = Field(32, ge=8, le=1024, description="square side images are resized to")


class TextDataConfig(_Section):
    text_column: str = "text"
    max_length: int = Field(64, ge=8, le=4096, description="tokens per sequence (padded/truncated)")
    tokenizer: str | None = Field(
        None, description="HF tokenizer name or dir; default: model.pretrained, else bundled MiniLM"
    )


class AudioDataConfig(_Section):
    sample_rate: int = Field(16000, ge=4000, le=96000)
    clip_seconds: float = Field(1.0, gt=0, le=60)
    n_mfcc: int = Field(22, ge=4, le=128, description="MFCC coefficients per frame (article: 22)")
    hop_length: int = Field(256, ge=32, le=4096)
    normalize: bool = Field(True, description="per-clip cepstral mean/variance normalization")

    @property
    def frames(self) -> int:
        # librosa's centred STFT yields 1 + samples // hop frames.
        return 1 + int(round(self.clip_seconds * self.sample_rate)) // self.hop_length


class DataConfig(_Section):
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
    materialize: bool = Field(
        False, description="keep decoded samples in Ray's object store after one pass, so later epochs "
        "skip reading and decoding (for data that fits in the cluster's object store)")
    # Large sharded sets (raylm/data/shards.py): shuffled without holding the set anywhere.
    shuffle_files: bool = Field(
        True, description="read the training files (shards) in a new seeded order every epoch")
    shuffle_buffer: int = Field(
        0, ge=0, description="rows in each training worker's local shuffle buffer; 0 = max(4 x train.batch_size, 256)")
    block_mib: int = Field(
        0, ge=0, le=1024, description="Ray Data's target block size (MiB) for this data; 0 = Ray's default (128). "
        "Blocks of a few MiB keep memory flat when the object store is small")
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

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        # Every example config names a demo set; a data.path given on top of one is the user's own
        # data, so it wins (the CLI prints a notice) instead of asking for data.name=null.
        if self.name is not None and self.path is not None:
            object.__setattr__(self, "name", None)
        return self


class ModelConfig(_Section):
    backend: Literal["torch", "keras"] = "torch"
    name: str = Field(..., description="registry name for (task.modality, name)")
    pretrained: str | None = Field(None, description="text: HF model name or local dir")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra builder arguments")


class TrainConfig(_Section):
    epochs: int = Field(3, ge=1, le=10_000)
    lr: float = Field(1e-3, gt=0, le=10)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: lr decays epoch by epoch towards 0 over train.epochs (torch backend)")
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1, description="per worker")
    num_workers: int | tuple[int, int] = Field(2, description="data-parallel Ray Train workers; [min, max]: elastic "
                                                               "(Train V2 runs on what the cluster holds, within the range)")
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool | Literal["auto"] = Field("auto", description="auto: when the cluster has a GPU per worker")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU")
    storage_path: str = Field("~/raylm_runs", description="root of all run directories")
    name: PlainName | None = Field(None, description="run name (one directory under storage_path); default <modality>-<model>-<time>")
    max_failures: int = Field(0, ge=-1, description="worker-group restarts; -1 = unlimited")
    seed: int = 0
    resume_from: str | None = Field(None, description="checkpoint dir to continue from")
    log_every_n_steps: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)

    @field_validator("num_workers")
    @classmethod
    def _worker_range(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        low, high = (value, value) if isinstance(value, int) else value
        if low < 1:
            raise ValueError("Input should be greater than or equal to 1")
        if low > high:
            raise ValueError(f"[min, max]: min {low} exceeds max {high}")
        return low if low == high else (low, high)

    @property
    def min_workers(self) -> int:
        return self.num_workers if isinstance(self.num_workers, int) else self.num_workers[0]

    @property
    def max_workers(self) -> int:
        return self.num_workers if isinstance(self.num_workers, int) else self.num_workers[1]

    @field_validator("resume_from")
    @classmethod
    def _checkpoint_exists(cls, value: str | None) -> str | None:
        if value is None or "://" in value:
            return value
        resolved = Path(value).expanduser()
        if not (resolved / "raylm.json").is_file():
            raise ValueError(f"not a raylm checkpoint (no raylm.json): {resolved}")
        return str(resolved.resolve())


class ImageAugmentConfig(_Section):
    """OpenCV image policy (train split only). Every op is off at 0: the default is the identity."""

    rotate_p: float = Field(0.0, ge=0, le=1, description="probability of a random rotation")
    max_rotation: float = Field(30.0, ge=0, le=180, description="degrees; angle ~ U(-max, max) (article: 30)")
    crop_p: float = Field(0.0, ge=0, le=1, description="probability of a random resized crop")
    crop_scale_min: float = Field(0.5, gt=0, le=1, description="smallest crop, as a fraction of the area")
    crop_scale_max: float = Field(1.0, gt=0, le=1, description="largest crop, as a fraction of the area")
    hflip_p: float = Field(0.0, ge=0, le=1, description="probability of a horizontal flip")
    brightness: float = Field(0.0, ge=0, le=1, description="additive shift ~ U(-b, b) on [0, 1] pixels")
    contrast: float = Field(0.0, ge=0, le=1, description="factor ~ U(1-c, 1+c) around the image mean")
    cutout_p: float = Field(0.0, ge=0, le=1, description="probability of one zeroed square")
    cutout_size: float = Field(0.25, ge=0, le=1, description="cutout side as a fraction of the image side")

    @model_validator(mode="after")
    def _crop_range(self) -> ImageAugmentConfig:
        if self.crop_scale_min > self.crop_scale_max:
            raise ValueError(f"crop_scale_min ({self.crop_scale_min}) must be <= crop_scale_max ({self.crop_scale_max})")
        return self


class AudioAugmentConfig(_Section):
    """Policy on MFCC frames (after decoding), train split only; off at 0."""

    noise_p: float = Field(0.0, ge=0, le=1, description="probability of additive Gaussian noise")
    snr_db_min: float = Field(10.0, ge=-20, le=100, description="noise SNR range in dB, against the clip's feature power")
    snr_db_max: float = Field(30.0, ge=-20, le=100)
    shift_p: float = Field(0.0, ge=0, le=1, description="probability of a time shift")
    max_shift: float = Field(0.1, ge=0, le=1, description="largest shift as a fraction of the frames")
    time_masks: int = Field(0, ge=0, le=10, description="SpecAugment time masks per clip")
    time_mask_width: float = Field(0.1, ge=0, le=1, description="widest time mask, fraction of the frames")
    freq_masks: int = Field(0, ge=0, le=10, description="SpecAugment coefficient masks per clip")
    freq_mask_width: int = Field(3, ge=0, le=128, description="widest coefficient mask, in coefficients")

    @model_validator(mode="after")
    def _snr_range(self) -> AudioAugmentConfig:
        if self.snr_db_min > self.snr_db_max:
            raise ValueError(f"snr_db_min ({self.snr_db_min}) must be <= snr_db_max ({self.snr_db_max})")
        return self


class TextAugmentConfig(_Section):
    """Token-level policy (after tokenizing), train split only; off at 0. Special tokens never change."""

    dropout_p: float = Field(0.0, ge=0, le=1, description="rate of tokens replaced by the unknown token")
    swap_p: float = Field(0.0, ge=0, le=1, description="rate of adjacent token swaps")
    delete_p: float = Field(0.0, ge=0, le=1, description="rate of deleted tokens")


class AugmentConfig(_Section):
    """Training-data augmentation; the section of ``task.modality`` is used."""

    image: ImageAugmentConfig = ImageAugmentConfig()
    audio: AudioAugmentConfig = AudioAugmentConfig()
    text: TextAugmentConfig = TextAugmentConfig()


class PruneConfig(_Section):
    method: str = Field("none", description="a registered pruner (raylm.compress.methods): none, magnitude, structured")
    sparsity: float = Field(0.5, ge=0, lt=1, description="magnitude: fraction of prunable weights set to zero")
    scope: Literal["global", "layer"] = Field("global", description="magnitude: one threshold for all layers, or per layer")
    structured_ratio: float = Field(0.5, ge=0, lt=1, description="structured: fraction of channels / FFN neurons removed")
    schedule: Literal["oneshot", "gradual"] = Field(
        "gradual", description="gradual: the mask ramps up (cubic, as tfmot's PolynomialDecay) while the fine-tune "
                               "epochs train around it; oneshot: prune once, then fine-tune (if any) with it fixed")


class QuantizeConfig(_Section):
    mode: str = Field(
        "none", description="a registered quantizer; ONNX Runtime int8: dynamic (weights int8, activations at run "
                            "time) or static (calibrated QDQ); keras: either means QAT + full-int8 TFLite")
    calibration_samples: int = Field(128, ge=1, description="static: training samples used to calibrate activations")
    per_channel: bool = True
    # ORT's dynamic ConvInteger is ~13x slower than fp32 Conv on the seed CNN (2-core x86, measured),
    # while int8 MatMul is faster and Gather (embeddings) shrinks text models. Convs go int8 with static.
    skip_op_types: list[str] = Field(
        default_factory=lambda: ["Conv"],
        description="dynamic: ONNX op types left in fp32 (ORT's dynamic int8 set minus these); static quantizes all")


class CompressConfig(_Section):
    variant: PlainName | None = Field(None, description="artifact name under <run_dir>/compress/; default from the recipe")
    prune: PruneConfig = PruneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    finetune_epochs: int = Field(0, ge=0, description="epochs of Ray Train fine-tuning after pruning (masks kept)")
    finetune_lr: float | None = Field(None, gt=0, description="default: train.lr / 10")
    export: str = Field(
        "auto", description="a registered exporter (torch: onnx, safetensors; keras: tflite); auto: the backend's (onnx, tflite)")
    parity_atol: float = Field(1e-4, gt=0, description="max |logit difference| allowed between export and in-memory model")
    serving_batch_size: int = Field(16, ge=1, description="the second batch size latency is measured at")
    latency_runs: int = Field(30, ge=1)
    latency_warmup: int = Field(5, ge=0)
    latency_threads: int = Field(1, ge=1, description="intra-op threads for torch and ONNX Runtime alike")
    max_eval_samples: int = Field(0, ge=0, description="0: the whole validation split")
    sparse_storage: bool = Field(
        True, description="store mostly-zero ONNX weights as sparse initializers (values + int32 indices), "
                          "rebuilt exactly by ONNX Runtime at load: unstructured sparsity then shrinks the file")
    min_size_gain: float = Field(1.5, ge=1, description="gain gate: the artifact counts if it is this many times "
                                                        "smaller than the dense reference ...")
    min_speedup: float = Field(1.2, ge=1, description="... or this many times faster at serving_batch_size")
    gain_tolerance: float = Field(0.1, ge=0, le=1, description="... and costs at most this fraction more on the "
                                                               "other (size or p50) than the dense reference")



class ServeConfig(_Section):
    """Ray Serve of ARTIFACTs (raylm/serve): batching, autoscaling, request limits, API key."""

    host: str = Field("127.0.0.1", description="HTTP bind address (0.0.0.0 in a cluster)")
    port: int = Field(8000, ge=1, le=65535)
    max_batch_size: int | None = Field(None, ge=1, description="rows per model call; 1 = batching off; "
                                       "None = from the default tier's measured latency curve")
    batch_wait_timeout_s: float | None = Field(None, ge=0, le=10, description="how long a batch waits to fill while "
                                               "other requests are arriving (never when none is); None = batch-1 latency")
    min_replicas: int = Field(1, ge=0, description="replicas (autoscaling_config)")
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(16, gt=0, description="autoscaling target per replica")
    upscale_delay_s: float = Field(30, ge=0, description="autoscaling_config: load above target this long adds replicas")
    downscale_delay_s: float = Field(600, ge=0, description="autoscaling_config: load below target this long removes them")
    look_back_period_s: float = Field(30, gt=0, description="autoscaling_config: window the load is averaged over")
    max_ongoing_requests: int = Field(64, ge=1, description="per replica, before the router queues")
    replica_cpus: float = Field(1.0, gt=0, description="CPUs reserved per replica")
    model_threads: int = Field(1, ge=1, description="intra-op threads per model replica (torch / ONNX Runtime)")
    default_tier: str | None = Field(None, description="tier used when a request names none; default: the first artifact")
    max_payload_bytes: int = Field(1_048_576, ge=1024, description="larger request bodies answer 413")
    max_text_chars: int = Field(2000, ge=1, description="longer texts answer 422")
    max_items: int = Field(64, ge=1, description="texts / images / clips per request")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="env var holding the API key; leave out for no key (local use)")
    api_key_header: str = "x-api-key"
    graceful_shutdown_timeout_s: float = Field(20, ge=0)
    health_check_period_s: float = Field(10, gt=0)
    request_timeout_s: float = Field(30, gt=0, description="Serve's HTTP proxies end a request after this long")
    limits: InputLimits = InputLimits()

    def http_options(self) -> dict[str, Any]:
        """``serve.start(http_options=...)``: where the proxies listen, and how long a request may take."""
        return {"host": self.host, "port": self.port, "request_timeout_s": self.request_timeout_s}

    @model_validator(mode="after")
    def _replica_range(self) -> ServeConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"serve.min_replicas={self.min_replicas} exceeds serve.max_replicas={self.max_replicas}")
        return self


Objective = Literal["accuracy", "latency_ms", "size_mb"]
# Fixed directions: nobody wants a less accurate, slower or bigger model.
OBJECTIVE_MODES: dict[str, str] = {"accuracy": "max", "latency_ms": "min", "size_mb": "min"}


class SearchDimension(_Section):
    """One dimension of a search space; exactly one key, e.g. ``{loguniform: [1e-4, 1e-2]}``."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = Field(None, description="integers in [low, high)")
    choice: list[Any] | None = None
    grid: list[Any] | None = Field(None, description="every value is tried (x tune.num_samples)")

    @model_validator(mode="after")
    def _one_kind(self) -> SearchDimension:
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of uniform, loguniform, randint, choice, grid (got {given or 'none'})")
        kind = given[0]
        value = getattr(self, kind)
        if kind in ("choice", "grid"):
            if not value:
                raise ValueError(f"{kind}: needs at least one value")
        else:
            low, high = value
            if not low < high:
                raise ValueError(f"{kind}: low={low} must be below high={high}")
            if kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: low={low} must be > 0")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def values(self) -> Any:
        return getattr(self, self.kind)


class TuneConfig(_Section):
    """A sweep: each trial trains (Ray Train), compresses and measures one point of ``space``."""

    space: dict[str, SearchDimension] = Field(
        default_factory=dict, description="dotted config path -> distribution, e.g. train.lr: {loguniform: [1e-4, 1e-2]}")
    search: Literal["random", "optuna"] = Field("random", description="random (and grid dimensions) or Optuna TPE")
    scheduler: Literal["fifo", "asha"] = Field("fifo", description="asha: stop weak trials early on val_accuracy")
    objectives: list[Objective] = Field(
        default_factory=lambda: ["accuracy"],
        description="accuracy (max), latency_ms (min, p50 at compress.serving_batch_size), size_mb (min); "
                    "more than one: multi-objective, the result is a Pareto front")
    num_samples: int = Field(8, ge=1, description="trials (with grid dimensions: repeats of the grid)")
    max_concurrent_trials: int = Field(0, ge=0, description="0: as many as the cluster's CPUs/GPUs fit")
    trial_cpus: float = Field(0.25, gt=0, description="CPUs for each trial's driver (its workers ask for their own); "
                                                      "a one-worker CPU trial trains in its actor and holds train.cpus_per_worker")
    grace_period: int | None = Field(
        None, ge=1, description="asha: epochs every trial gets before it can be stopped; None: rungs at "
                                "(epochs + 1) / reduction_factor^k, the lowest at >= 2 epochs where the budget allows")
    reduction_factor: float = Field(2.0, gt=1, description="asha: keep the best 1/reduction_factor at each rung")
    seed: int | None = Field(0, description="searcher seed (random and Optuna); None: not reproducible")
    export: Literal["best", "pareto", "none"] = Field(
        "best", description="best: the top trial's artifact to <run>/compress/tune-best; pareto: every front member")
    time_budget_s: float | None = Field(None, gt=0, description="stop starting trials after this many seconds")

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one objective")
        if len(set(value)) != len(value):
            raise ValueError(f"repeats an objective: {value}")
        return value

    @model_validator(mode="after")
    def _searchable(self) -> TuneConfig:
        grid = [path for path, dim in self.space.items() if dim.kind == "grid"]
        if grid and self.search == "optuna":
            raise ValueError(f"tune.space.{grid[0]}: grid dimensions need tune.search=random (Optuna samples; "
                             "use choice)")
        return self


class PipelineConfig(_Section):
    """``raylm pipeline``: tune -> retrain the chosen point -> compress -> evaluate -> serve -> smoke request."""

    retrain_epochs: int | None = Field(None, ge=1, description="epochs of the final retrain; default train.epochs")
    retrain_workers: int | None = Field(None, ge=1, description="Ray Train workers of the final retrain; default train.num_workers")
    choose_within: float = Field(
        0.0, ge=0, le=1, description="pick the lowest-latency Pareto member within this much accuracy of the most "
                                     "accurate one (0: the best trial by tune.objectives)")
    max_accuracy_drop: float = Field(
        1.0, ge=0, le=100, description="accuracy guard, in points: the served artifact vs the dense retrained model, "
                                       "on the whole validation split, measured from the exported file")
    prune_epochs: int = Field(3, ge=0, description="a pruning recipe without compress.finetune_epochs: epochs the "
                                                  "retrained model trains around its ramping mask (0: one-shot)")
    recovery_epochs: int = Field(2, ge=0, description="guard missed: epochs of a recovery fine-tune (pruned "
                                                      "recipes) before the next front member is tried")
    serve_over_budget: bool = Field(False, description="serve the chosen recipe even when it misses the guard "
                                                       "or the gain gate (recorded); false: fall back, finally dense")
    keep_serving: bool | Literal["auto"] = Field(
        "auto", description="block after the smoke request; auto: when this process started Ray and has a terminal")


class RaylmConfig(_Section):
    task: TaskConfig
    data: DataConfig = DataConfig()
    model: ModelConfig
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    compress: CompressConfig = CompressConfig()
    serve: ServeConfig = ServeConfig()
    tune: TuneConfig = TuneConfig()
    pipeline: PipelineConfig = PipelineConfig()

    @model_validator(mode="after")
    def _resolve(self) -> RaylmConfig:
        from raylm.registry import MODELS, DATASETS  # deferred: registry imports model modules

        modality = self.task.modality
        MODELS.check(modality, self.model.name, self.model.backend, field="model.name")
        MODELS.check_kwargs(modality, self.model.name, self.model.backend, self.model.kwargs, field="model.kwargs")
        if self.data.path is None:
            if self.data.name is None:
                object.__setattr__(self.data, "name", DATASETS.default(modality))
            DATASETS.check(modality, self.data.name, "any", field="data.name")
        self._check_compress_for_backend()
        if self.train.name is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            object.__setattr__(self.train, "name", f"{modality}-{self.model.name}-{stamp}")
        return self

    def _check_compress_for_backend(self) -> None:
        """The compression methods by name (registered per backend), and the rules between them:
        checked here, so before Ray starts and for every value of a sweep's space (``check_space``
        validates each), not after a trial trained."""
        from raylm.registry import COMPRESSION_METHODS

        cc, backend = self.compress, self.model.backend
        for step, name, field in (("prune", cc.prune.method, "compress.prune.method"),
                                  ("quantize", cc.quantize.mode, "compress.quantize.mode"),
                                  ("export", cc.export, "compress.export")):
            if (step, name) != ("export", "auto"):
                COMPRESSION_METHODS.check(step, name, backend, field=field)
        quantizer = COMPRESSION_METHODS.get("quantize", cc.quantize.mode, backend)
        if cc.export != "auto" and cc.quantize.mode != "none" and cc.export not in quantizer.exports:
            raise ValueError(f"compress.export: int8 models are exported as {' or '.join(quantizer.exports)} "
                             f"(set export={quantizer.exports[0]} or auto)")
        pruner = COMPRESSION_METHODS.get("prune", cc.prune.method, backend)
        if pruner.needs_finetune and pruner.removes(cc.prune) and cc.finetune_epochs < 1:
            raise ValueError(f"compress.finetune_epochs: {backend}'s {cc.prune.method} pruning prunes while "
                             "fine-tuning: at least 1 epoch when it removes weights")

    def override(self, changes: dict[str, Any] | list[str]) -> RaylmConfig:
        """A validated copy with ``changes``: ``{"train.epochs": 3, "model": {...}}`` (dotted paths;
        a section's dict merges into it) or CLI-style ``["train.epochs=3"]``. ConfigError names the field."""
        return validate_config(merge(self.to_dict(), _changes_tree(changes)))

    @classmethod
    def from_saved(cls, tree: dict[str, Any], *, labels: list[str] | None = None,
                   changes: dict[str, Any] | list[str] = ()) -> RaylmConfig:
        """The config a checkpoint or artifact recorded, made to run again: its labels fixed, no
        ``train.resume_from``, then ``changes`` (before validation, so a moved ``data.path`` can be fixed)."""
        tree = json.loads(json.dumps(tree))
        tree.setdefault("train", {})["resume_from"] = None
        if labels is not None:
            tree.setdefault("task", {})["labels"] = list(labels)
        return validate_config(merge(tree, _changes_tree(changes)))

    @property
    def run_dir(self) -> Path:
        """``<storage_path>/<run name>``: every stage of one run writes below it."""
        return Path(os.path.expanduser(self.train.storage_path)).resolve() / str(self.train.name)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def _changes_tree(changes: dict[str, Any] | list[str] | tuple[str, ...]) -> dict[str, Any]:
    if isinstance(changes, (list, tuple)):
        return parse_overrides(list(changes))
    tree: dict[str, Any] = {}
    for dotted, value in changes.items():
        _set_dotted(tree, dotted, value)
    return tree


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.lr=3e-4", "task.labels=[a,b]"]`` -> nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not key=value (e.g. train.lr=3e-4)")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"])
        got = f" (got {e['input']!r})" if e["type"] != "missing" and not isinstance(e["input"], dict) else ""
        if not field and e["type"] == "value_error":  # a rule across sections: its message names the fields
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {field or '<config>'}: {e['msg']}{got}")
    return "invalid raylm config:\n" + "\n".join(lines)


def validate_config(tree: dict[str, Any]) -> RaylmConfig:
    try:
        return RaylmConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> RaylmConfig:
    """Read YAML (optional), apply ``key=value`` overrides, validate."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"--config: no such file: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"--config: {p} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config: {p} must hold a mapping of sections")
        tree = loaded
    tree = merge(tree, parse_overrides(overrides or []))
    data = tree.get("data")
    if isinstance(data, dict) and data.get("name") is not None and data.get("path") is not None:
        print(f"raylm: data.path={data['path']} replaces the demo dataset data.name={data['name']}", file=sys.stderr)
    return validate_config(tree)
