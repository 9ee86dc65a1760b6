"""Shuffling a sharded dataset without holding it anywhere.

A large set is many shards (parquet, JSONL or CSV files, or a folder's image/audio files) that Ray
Data reads lazily, a few blocks at a time. Two cheap shuffles together stand in for a global one:

- **shard order** (``data.shuffle_files``): Ray Data reads the training files in a new order each
  epoch (seeded by ``train.seed``, re-seeded per execution), so no epoch sees the shards in the
  same sequence;
- **a local shuffle buffer** (``data.shuffle_buffer``) on each training worker mixes rows of the
  blocks it is streaming (several shards at once), bounded by the buffer's rows.

Rows inside one shard should not be sorted by class: shard order and a buffer of a few hundred
rows cannot undo a shard that holds one class (``raylm data synth`` writes mixed shards).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylm.config import RaylmConfig


def file_shuffle(cfg: RaylmConfig) -> Any:
    """The ``shuffle`` argument of Ray Data's file readers for the training split: None, or a
    seeded FileShuffleConfig whose order changes with every execution (epoch)."""
    if not cfg.data.shuffle_files:
        return None
    from ray.data import FileShuffleConfig

    return FileShuffleConfig(seed=cfg.train.seed, reseed_after_execution=True)


def stream_budget(cfg: RaylmConfig) -> int | None:
    """``data.stream_memory`` in bytes: MiB as given (> 1), or that share of the running Ray's object
    store (<= 1); None while no Ray is running to take the share of (Ray Data's default then applies)."""
    value = cfg.data.stream_memory
    if value > 1:
        return int(value * 2**20)
    import ray

    store = ray.cluster_resources().get("object_store_memory", 0) if ray.is_initialized() else 0
    return int(value * store) or None


def shared_stream_memory(cfg: RaylmConfig, pipelines: int) -> RaylmConfig:
    """``cfg`` for one of ``pipelines`` streams running at once on one Ray (a sweep's concurrent trials each
    execute the dataset on their own): a ``data.stream_memory`` share of the store divided between them, so
    that together they hold what one stream would. MiB (> 1) are the user's per-stream figure, kept."""
    value = cfg.data.stream_memory
    if pipelines <= 1 or value > 1:
        return cfg
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"stream_memory": value / pipelines})})


# data.block_mib=0: Ray's block size, unless the stream's budget holds fewer than this many blocks per
# consumer of the split (each training worker) plus the read and decode stages.
BLOCKS_PER_CONSUMER = 2
MIN_AUTO_BLOCK = 2**20


def auto_block_bytes(budget: int | None, workers: int, ray_default: int | None) -> int | None:
    """The target block size for ``data.block_mib=0``: Ray's default, or smaller where the ``data.stream_memory``
    budget would hold fewer than BLOCKS_PER_CONSUMER blocks for each of ``workers`` split consumers and the two
    stages before them. With 2 training workers, Ray's 128 MiB blocks and a 200 MB object store (budget 100 MB),
    502 MiB of a 578 MiB epoch spilled; with 1 worker, or 8 MiB blocks, none (docs/large-data.md)."""
    if budget is None or not ray_default:
        return ray_default
    fitted = budget // (BLOCKS_PER_CONSUMER * (max(1, workers) + 2))
    return max(MIN_AUTO_BLOCK, min(ray_default, fitted))


def _bounded(options: Any, budget: int | None, *, cpus: float | None = None) -> Any:
    """A copy of Ray Data ``ExecutionOptions`` limited to ``budget`` bytes of the object store and
    ``cpus`` CPUs (None: no change)."""
    import copy

    options = copy.deepcopy(options)
    if budget is not None:
        options.resource_limits = options.resource_limits.copy(object_store_memory=budget)
    if cpus is not None:
        options.resource_limits = options.resource_limits.copy(cpu=cpus)
    return options


@contextlib.contextmanager
def bounded_stream(cfg: RaylmConfig) -> Iterator[None]:
    """Datasets created inside stream within ``data.stream_memory`` of the object store, in blocks
    of ``data.block_mib`` (a dataset keeps the context it was created with, and so do the stages
    derived from it; Ray Train replaces the execution options: :func:`ingest_options`).

    - **block size**: Ray's default, 128 MiB, is sized for an object store of 30 % of RAM: with a
      small store two such blocks fill it and the rest spills to disk.
    - **the budget**: Ray Data's resource limit on object-store memory; its backpressure holds the
      reads back when the blocks in flight (read, decoded, augmented, queued for the split) reach it.
      Ray's own default is half the store, which a producer running ahead of the trainer overran
      (issue 31: 789 MB of an 800 MB set spilled with a 128 MB store).
    - **read units**: Ray 2.60's Parquet reader (datasource v2) bin-packs row groups into 128 MiB
      read tasks whatever the block size (``RAY_DATA_PARQUET_BIN_PACKING_BYTES``, read from the
      environment) and lists footers with a pool of 32 actors, one Python worker each: the worker
      storm on a 2-core node. The v1 reader reads one file group per task in batches sized to the
      target block size and starts no actors; it is used for the sets raylm streams.
    """
    from ray.data import DataContext

    from raylm.data.pacing import PacedSchedulingLoop

    context = DataContext.get_current()
    before = (context.target_max_block_size, context.use_datasource_v2, context.execution_options,
              context.custom_execution_callback_classes)
    if cfg.data.block_mib:
        context.target_max_block_size = cfg.data.block_mib * 2**20
    else:
        context.target_max_block_size = auto_block_bytes(stream_budget(cfg), cfg.train.max_workers,
                                                         context.target_max_block_size)
    context.use_datasource_v2 = False
    context.execution_options = _bounded(context.execution_options, stream_budget(cfg))
    # A new list (a dataset's context is a shallow copy of this one): the executor's loop paced (pacing.py).
    context.custom_execution_callback_classes = [*before[3], PacedSchedulingLoop]
    try:
        yield
    finally:
        (context.target_max_block_size, context.use_datasource_v2, context.execution_options,
         context.custom_execution_callback_classes) = before


def ingest_options(cfg: RaylmConfig, *, training_cpus: float = 0) -> Any:
    """Ray Data execution options for Ray Train's ``DataConfig``: Ray Train sets them on every
    dataset it splits, replacing the ones the dataset was created with. The ``data.stream_memory``
    budget, and a CPU limit of the cluster's CPUs less the training workers' (at least one), so
    Ray Data starts no more read/decode tasks (and Python workers for them) than there are free CPUs."""
    import ray
    from ray.train import DataConfig

    total = ray.cluster_resources().get("CPU", 0) if ray.is_initialized() else 0
    cpus = max(1.0, total - training_cpus) if total else None
    return _bounded(DataConfig.default_ingest_options(), stream_budget(cfg), cpus=cpus)


def local_shuffle(cfg: RaylmConfig, *, epoch: int, rank: int, world: int) -> dict[str, int]:
    """``iter_torch_batches`` / ``to_tf`` arguments: each worker's shuffle buffer, seeded per epoch and rank."""
    size = cfg.data.shuffle_buffer or max(4 * cfg.train.batch_size, 256)
    return {"local_shuffle_buffer_size": size, "local_shuffle_seed": cfg.train.seed * 1000 + epoch * world + rank}


# Decoded training batches a worker's iterator may hold ahead of the one it trains on (data.prefetch_batches=0).
PREFETCH_BYTES = 64 * 2**20
PREFETCH_RANGE = (2, 8)


def prefetch_batches(cfg: RaylmConfig) -> int:
    """``iter_torch_batches``' ``prefetch_batches`` for the training split: ``data.prefetch_batches``, or as many
    batches as fit in PREFETCH_BYTES of decoded samples, within PREFETCH_RANGE. With raylm's old fixed 2 the
    image benchmark's streamed trainer waited on its data 8-15 % of the epoch; with 8 it waited 4-9 % (quiet and
    loaded runs of benchmarks/ingest.py; its samples/s were not told apart by those runs, docs/large-data.md).
    2 stays the floor for large inputs (a 224x224 float32 batch of 64 is 38 MB)."""
    if cfg.data.prefetch_batches:
        return cfg.data.prefetch_batches
    from raylm.data.materialize import sample_bytes
    from raylm.data.modality import modality_record

    batch = sample_bytes(modality_record(cfg.task.modality), cfg) * cfg.train.batch_size
    low, high = PREFETCH_RANGE
    return max(low, min(high, PREFETCH_BYTES // max(batch, 1)))


def _import_stream_stages() -> None:
    """What a read+decode task imports first (Ray Data, pyarrow's parquet, OpenCV, raylm's decoders)."""
    import cv2  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import ray.data  # noqa: F401

    import raylm.data.images  # noqa: F401
    import raylm.data.modality  # noqa: F401


def warm_stream_workers(processes: int = 3) -> list[Any]:
    """Start now, before Ray Train's worker group, the Ray processes a streamed set's first epoch would
    otherwise wait on after it began: Ray Data's stats actor (created at a cluster's first execution)
    and ``processes`` workers that have imported the read+decode stage, left idle in Ray's worker pool
    for the split coordinator and the first read task (issue 31: at load 17 the read task waited 3 s
    for a new worker, the stats actor 2.6 s, inside the epoch). The workers run with the runtime
    environment Ray Train gives its controller, which the tasks it starts inherit: a worker is reused
    only for a task of the same environment. Nothing is waited for (the tasks' refs are returned)."""
    import ray
    from ray.data._internal.stats import get_or_create_stats_actor
    from ray.train.v2.api.data_parallel_trainer import (
        DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE,
        RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR,
        get_env_vars_to_propagate,
    )

    env_vars = get_env_vars_to_propagate()  # as DataParallelTrainer sets them on its controller
    env_vars.setdefault(RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR, DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE)
    get_or_create_stats_actor()
    warm = ray.remote(num_cpus=0, runtime_env={"env_vars": env_vars})(_import_stream_stages)
    return [warm.remote() for _ in range(processes)]


def train_data_config(cfg: RaylmConfig, *, max_workers: int, training_cpus: float) -> Any:
    """Ray Train's ``DataConfig`` for a run: which splits are split between workers
    (:func:`datasets_to_split`), Ray Data's options (:func:`ingest_options`), and for the PyTorch loop
    the validation split scored row for row (:class:`ExactValidationSplit`)."""
    from ray.train import DataConfig

    options = {"datasets_to_split": datasets_to_split(max_workers),
               "execution_options": ingest_options(cfg, training_cpus=training_cpus)}
    # Keras' strategy runs a collective per evaluation step, so its workers need equal shards.
    return exact_validation_split()(**options) if cfg.model.backend == "torch" else DataConfig(**options)


def exact_validation_split() -> type:
    """The :class:`ExactValidationSplit` class, defined on first use (it subclasses ``ray.train.DataConfig``,
    and importing ray.train here would slow every config check)."""
    if "ExactValidationSplit" in globals():
        return globals()["ExactValidationSplit"]
    from ray.train import DataConfig

    class ExactValidationSplit(DataConfig):
        """Ray Train's ``DataConfig``, but the validation split is divided between the workers unevenly
        (``streaming_split(equal=False)``): every row scored once. Ray's equal split trims each worker's
        share to the smallest, dropping up to ``world_size - 1`` rows from every evaluation. An uneven
        split is safe only because validation runs no collective per batch: the PyTorch loop evaluates
        the unwrapped module (no DDP buffer broadcast) and all-reduces the sums once (train/loop.py
        ``evaluate``). Training stays equal: DDP's gradient all-reduce needs the same step count."""

        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            split = set(datasets) if self._datasets_to_split == "all" else set(self._datasets_to_split)
            if world_size < 2 or VALIDATION not in datasets or VALIDATION not in split:
                return super().configure(datasets, world_size, worker_handles, worker_node_ids, **kwargs)
            rest = {name: ds for name, ds in datasets.items() if name != VALIDATION}
            output = (super().configure(rest, world_size, worker_handles, worker_node_ids, **kwargs) if rest
                      else [{} for _ in range(world_size)])
            ds = datasets[VALIDATION]
            if ds.name is None:
                ds.set_name(VALIDATION)
            ds = ds.copy(ds)
            ds.context.execution_options = self._resolve_execution_options(VALIDATION)
            hints = worker_node_ids if self._enable_shard_locality else None
            for rank, shard in enumerate(ds.streaming_split(world_size, equal=False, locality_hints=hints)):
                output[rank][VALIDATION] = shard
            return output

    # Pickled by reference to Ray Train's DatasetManager actor, which finds it through __getattr__ below.
    ExactValidationSplit.__qualname__ = "ExactValidationSplit"
    globals()["ExactValidationSplit"] = ExactValidationSplit
    return ExactValidationSplit


VALIDATION = "validation"


def __getattr__(name: str) -> Any:
    if name == "ExactValidationSplit":
        return exact_validation_split()
    raise AttributeError(name)


def datasets_to_split(max_workers: int) -> list[str] | str:
    """Ray Train ``DataConfig(datasets_to_split=...)``: the training set is always split between the
    workers (``streaming_split``: each row to one worker once per epoch, through a coordinator actor
    that runs Ray Data's executor beside the trainer); validation too with two or more workers. A single
    worker reads validation whole (``Dataset.iterator()``: the executor on the worker, between epochs,
    when nothing trains): one actor process less to start with the first epoch (issue 31)."""
    return "all" if max_workers > 1 else ["train"]
