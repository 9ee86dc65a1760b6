"""``model`` and ``train``: which registered builder, trained how (Ray Train)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from raylm.config.section import PlainName, Section


class ModelConfig(Section):
    backend: Literal["torch", "keras"] = "torch"
    name: str = Field(..., description="registry name for (task.modality, name)")
    pretrained: str | None = Field(None, description="text: HF model name or local dir")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra builder arguments")


class TrainConfig(Section):
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
    storage_path: str = Field("~/raylm_runs", description="root of all run directories: a local path, a shared "
                                                          "mount or a URI (s3://bucket/prefix, gs://...; docs/storage.md)")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="options of the URI's pyarrow filesystem "
                                            "(S3: endpoint_override, region, scheme, ...); credentials from the environment")
    storage_shared: bool = Field(
        False, description="storage_path (and data.path) are NFS-style mounts every node of the cluster has at the "
        "same place; without it a local path is refused on a cluster of several nodes (a URI is always fine)")
    wait_for_resources_s: float = Field(
        600, ge=0, description="how long a run that needs more than is up waits for the autoscaler to add it")
    name: PlainName | None = Field(None, description="run name (one directory under storage_path); default <modality>-<model>-<time>")
    max_failures: int = Field(0, ge=-1, description="worker-group restarts; -1 = unlimited")
    seed: int = 0
    resume_from: str | None = Field(None, description="checkpoint dir (or URI) to continue from")
    log_every_n_steps: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints; an epoch that improves "
                                  "val_accuracy and the last epoch are always checkpointed")

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

    @model_validator(mode="after")
    def _storage_uri(self) -> TrainConfig:
        """A URI is checked here, before Ray starts: its scheme, its bucket, its options (no network)."""
        from urllib.parse import urlsplit

        from raylm.storage import StorageURIError, check_uri, is_uri
        from raylm.storage.location import check_local_path, check_options

        for key, value in (("storage_path", self.storage_path), ("resume_from", self.resume_from)):
            if value is None:
                continue
            try:
                check_uri(value) if is_uri(value) else check_local_path(value)
            except StorageURIError as err:
                raise ValueError(f"train.{key}: {err}") from None
        if self.storage_options:
            if not is_uri(self.storage_path):
                raise ValueError("train.storage_options: only for a URI train.storage_path (s3://, gs://)")
            try:
                check_options(urlsplit(self.storage_path).scheme, self.storage_options)
            except StorageURIError as err:
                raise ValueError(f"train.storage_options: {err}") from None
        return self

    @field_validator("resume_from")
    @classmethod
    def _checkpoint_exists(cls, value: str | None) -> str | None:
        if value is None or "://" in value:
            return value
        resolved = Path(value).expanduser()
        if not (resolved / "raylm.json").is_file():
            raise ValueError(f"not a raylm checkpoint (no raylm.json): {resolved}")
        return str(resolved.resolve())
