"""The per-worker training loop that Ray Train runs on every data-parallel worker."""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from raylm.config import RaylmConfig, TrainConfig
from raylm.data import MODEL_INPUTS
from raylm.data.augment import set_epoch as set_augment_epoch
from raylm.data.shards import local_shuffle, prefetch_batches
from raylm.models import build_model
from raylm.train.checkpoint import (
    checkpoint_rank,
    drop_stale_optimizer_states,
    ray_checkpoint,
    read_meta,
    restore_newest,
    restore_training_state,
    run_checkpoints,
    unwrap,
    write_checkpoint,
)
from raylm.train.feed import EpochFeed
from raylm.train.hooks import TrainHooks, apply_masks

# A logger, not print: Ray Train V2 both tees and logs a worker's print(), so it shows twice.
log = logging.getLogger("raylm.train")


def _autocast(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def waiting_on(batches, waited: list[float], steps: list[float] | None = None):
    """``batches``, adding to ``waited[0]`` the seconds spent blocked on each next batch (the trainer's
    wait on its data), of which ``waited[1]`` (added to): the wait for the first one (the pipeline's start);
    each step's wait also appended to ``steps`` when given."""
    iterator = iter(batches)
    first = True
    while True:
        asked = time.perf_counter()
        batch = next(iterator, None)
        seconds = time.perf_counter() - asked
        waited[0] += seconds
        if steps is not None:
            if batch is not None:
                steps.append(seconds)
            elif steps:  # the wait to learn the epoch is over belongs to its last tenth (sums stay whole)
                steps[-1] += seconds
        if first:
            waited[1], first = waited[1] + seconds, False
        if batch is None:
            return
        yield batch


def wait_by_tenth(step_waits: list[float], joined: float = 0.0) -> list[float]:
    """The waits of an epoch's steps summed per tenth of its steps (``joined``: a wait before the first step)."""
    tenths = [0.0] * 10
    for i, seconds in enumerate(step_waits):
        tenths[i * 10 // len(step_waits)] += seconds
    tenths[0] += joined
    return [round(t, 3) for t in tenths]


def _forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], inputs: tuple[str, ...]) -> torch.Tensor:
    return model(*(batch[name] for name in inputs))


def evaluate(model: torch.nn.Module, batches, inputs: tuple[str, ...], device: torch.device, precision: str) -> dict[str, float]:
    """Loss and accuracy summed over this worker's batches, then over all workers. The workers' validation
    shares differ by up to a batch (shards.ExactValidationSplit), so no collective may run per batch: the
    DDP wrapper's forward would broadcast buffers each call and wait forever for a rank already done."""
    model = getattr(model, "module", model) if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    model.eval()
    loss_sum = correct = count = 0.0
    with torch.no_grad(), _autocast(device, precision):
        for batch in batches:
            logits = _forward(model, batch, inputs).float()
            loss_sum += F.cross_entropy(logits, batch["label"], reduction="sum").item()
            correct += (logits.argmax(-1) == batch["label"]).sum().item()
            count += len(batch["label"])
    loss_sum, correct, count = _all_reduce_sum([loss_sum, correct, count], device)
    return {"val_loss": loss_sum / max(count, 1), "val_accuracy": correct / max(count, 1), "val_samples": int(count)}


def epoch_lr(training: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based), from the epoch alone: a run resumed from a
    checkpoint continues the same curve without scheduler state."""
    if training.lr_schedule == "cosine":
        return training.lr * 0.5 * (1 + math.cos(math.pi * epoch / training.epochs))
    return training.lr


def epoch_hyperparameters(cfg: RaylmConfig, tracked: list[str], scheduled: dict[str, Any] | None) -> dict[str, Any]:
    """The values an epoch trains with, by dotted key: the tracked config paths (a PBT trial's
    mutable keys, which an exploit changes between epochs) and the run's ``augment.schedule`` values
    for this epoch. Recorded in every epoch's metrics (and so in each checkpoint's history): a PBT
    trial's history is its lineage's schedule (raylm/tune/schedule.py)."""
    values: dict[str, Any] = {}
    for path in tracked:
        node: Any = cfg
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else getattr(node, key)
        values[path] = node
    return values | (scheduled or {})


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the weights (names and values, in order): which weights a run started from."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in unwrap(model).state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def replica_digests(model: torch.nn.Module) -> list[str]:
    """Every rank's sha256 of its parameters (rank order; a collective: all ranks call it). DDP keeps the
    replicas' parameters identical (one all-reduced gradient, one optimizer step each); replicas that
    never synced gradients drift apart after their first step. Buffers (BatchNorm's running statistics)
    are each rank's own between DDP's broadcasts and are left out."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in unwrap(model).named_parameters():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [digest.hexdigest()]
    gathered: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, digest.hexdigest())
    return [str(g) for g in gathered]


LOSS_TIE = 1e-6  # relative: val_loss differences below this are float32 noise (checkpoint_due)


def checkpoint_due(training: TrainConfig, history: list[dict[str, Any]]) -> bool:
    """Whether the epoch just ended (the last of ``history``) writes a checkpoint: every
    ``train.checkpoint_every`` epochs, the last epoch, and any epoch that beats the best so far (its
    val_accuracy, or an equal one at a val_loss lower by more than LOSS_TIE of it: ``checkpoint_rank`` less
    the epoch).
    The same answer on every rank (the metrics are all-reduced)."""
    epoch = history[-1]["epoch"]
    best_before = max((checkpoint_rank(h)[:2] for h in history[:-1]), default=(float("-inf"), float("-inf")))
    accuracy, neg_loss = checkpoint_rank(history[-1])[:2]
    # A loss lower only at float32's resolution (the same weights summed in another order, or an update too
    # small to matter: 0.7861410 -> 0.7861408 at lr 1e-9) is a tie, not a better model worth a checkpoint.
    margin = LOSS_TIE * abs(best_before[1]) if math.isfinite(best_before[1]) else 0.0
    beats = accuracy > best_before[0] or (accuracy == best_before[0] and neg_loss > best_before[1] + margin)
    return epoch % training.checkpoint_every == 0 or epoch == training.epochs or beats


def newest_stored(train_uri: str, resume, options: dict[str, Any]) -> str | None:
    """The checkpoint with the highest epoch among the run's checkpoints in storage and ``resume``
    (Ray's or the driver's choice), as a URI; None for a fresh start."""
    from raylm.storage import StoragePath
    from raylm.train.checkpoint import checkpoint_location, read_stored_meta, stored_checkpoints

    found = [(int(meta.get("epoch", 0)), location.uri) for location, meta in
             stored_checkpoints(StoragePath.of(train_uri, options))]
    if resume is not None:
        given = checkpoint_location(resume, options)
        found.append((int(read_stored_meta(given).get("epoch", 0)), given.uri))
    return max(found)[1] if found else None


def _broadcast(value: str | None) -> str | None:
    """Rank 0's value on every rank: one decision per (re)start, not one per rank's view of storage."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def warm_optimizer_import() -> None:
    """Import ``torch._dynamo`` on a daemon thread. Every torch optimizer's ``step()`` imports it
    (``torch.optim.optimizer._use_grad_for_differentiable``), so a process's first step paid 2-7 s
    for it inside the first epoch (py-spy, issue 25); started here, it overlaps the model's build,
    the data's read and the wait for the first batch. Once per process (later calls are no-ops)."""
    import sys
    import threading

    if "torch._dynamo" in sys.modules:
        return

    def load() -> None:
        import torch._dynamo  # noqa: F401

    threading.Thread(target=load, daemon=True, name="raylm-warm-torch-dynamo").start()


def _may_resume(loop_config: dict[str, Any]) -> bool:
    """Whether this (re)start could continue from a checkpoint: then its first epoch is known only after the restore."""
    import ray.train

    if ray.train.get_checkpoint() is not None or loop_config.get("resume_checkpoint") or loop_config.get("train_uri") is not None:
        return True
    train_dir = loop_config.get("train_dir")
    return train_dir is not None and bool(run_checkpoints(Path(train_dir)))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    warm_optimizer_import()

    cfg: RaylmConfig = loop_config["config"]
    labels: list[str] = loop_config["labels"]
    training = cfg.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    inputs = MODEL_INPUTS[cfg.task.modality]
    memory = loop_config.get("memory")
    if memory is not None:  # one worker over small kept splits: batches from this process's memory
        from raylm.train.memory_feed import MemoryFeed, epoch_augmenter, read_columns

        in_memory = MemoryFeed(read_columns(memory["train"]), read_columns(memory["validation"]), batch_size=training.batch_size,
                               seed=training.seed, augment=epoch_augmenter(cfg), device=device)
    else:
        train_shard = ray.train.get_dataset_shard("train")
        val_shard = ray.train.get_dataset_shard("validation")
        stream_prefetch = prefetch_batches(cfg)

    def epoch_batches(epoch: int):
        if memory is not None:
            return in_memory.batches(epoch)
        set_augment_epoch(loop_config.get("augment_run_id"), epoch)  # before this epoch's data is produced
        return train_shard.iter_torch_batches(batch_size=training.batch_size, device=device, prefetch_batches=stream_prefetch,
                                              **local_shuffle(cfg, epoch=epoch, rank=rank, world=world))

    def validation_batches():
        if memory is not None:
            return in_memory.validation_batches()
        return val_shard.iter_torch_batches(batch_size=training.batch_size, device=device)

    feed = EpochFeed(epoch_batches)  # the next epoch's pipeline starts while this one validates (feed.py)
    if memory is None and world == 1 and training.epochs > 0 and not _may_resume(loop_config):
        # A fresh run's epoch 0 starts streaming now, while the model is built: Ray Train creates the split
        # coordinators (a new actor process each) at the first get_dataset_shard and the read tasks' workers
        # start after them, so this start overlaps the setup below instead of following it (issue 31).
        feed.start(0)

    torch.manual_seed(training.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
    # Compression's fine-tune starts from a pruned model (its own, possibly narrower, shapes) and
    # keeps or ramps its masks, through typed hooks: training never imports compression.
    hooks: TrainHooks = loop_config.get("hooks") or TrainHooks()
    model = build_model(cfg, len(labels), load_pretrained=hooks.initial_weights is None)
    if hooks.initial_weights is not None:
        hooks.initial_weights(model)
    masks = hooks.masks(model) if hooks.masks is not None else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    start_epoch, history = 0, []
    # A restarted worker group (max_failures) resumes from the checkpoint Ray's controller hands every
    # rank; a new run from the one the driver chose in storage (train/__init__.py: decide_resume).
    resume = ray.train.get_checkpoint()
    if resume is None and loop_config.get("resume_checkpoint"):
        resume = ray_checkpoint(loop_config["resume_checkpoint"], training.storage_options)
    if loop_config.get("train_uri") is not None:  # URI storage: the newest checkpoint there, chosen by rank 0
        chosen = _broadcast(newest_stored(loop_config["train_uri"], resume, training.storage_options) if rank == 0 else None)
        if chosen is not None:
            resume = ray_checkpoint(chosen, training.storage_options)
    train_dir = loop_config.get("train_dir")  # local storage: also the checkpoints Ray never heard of
    if train_dir is not None:
        candidates = run_checkpoints(Path(train_dir)) + ([Path(resume.path)] if resume is not None else [])
        restored = restore_newest(candidates, model, optimizer)
        if restored is not None:
            directory, start_epoch = restored
            history = read_meta(directory).get("history", [])
            if rank == 0:
                log.info("[raylm] resumed from %s after epoch %d", directory, start_epoch)
    elif resume is not None:
        with resume.as_directory() as directory:
            start_epoch = restore_training_state(directory, model, optimizer)
            history = read_meta(directory).get("history", [])
        if rank == 0:
            log.info("[raylm] resumed from %s after epoch %d", resume.path, start_epoch)
    # A PBT trial records the weights it starts from (its own or a donor's checkpoint, after an exploit).
    start_record = {"start_epoch": start_epoch, "start_digest": weights_digest(model)} if loop_config.get("tracked") else {}
    model = ray.train.torch.prepare_model(model)

    step = 0
    schedule, tracked = loop_config.get("schedule"), list(loop_config.get("tracked") or ())
    for epoch in range(start_epoch, training.epochs):
        scheduled = schedule[epoch] if schedule else None
        # augment.schedule's train.lr replaces train.lr for this epoch (train.lr_schedule still applies).
        lr_config = training.model_copy(update={"lr": scheduled["train.lr"]}) if scheduled and "train.lr" in scheduled else training
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(lr_config, epoch)
        if hooks.sparsity_schedule is not None:  # gradual pruning: the sparsity ramps up epoch by epoch
            masks = hooks.sparsity_schedule(unwrap(model), epoch + 1, training.epochs)
            apply_masks(unwrap(model), masks)
        model.train()
        started, started_at = time.perf_counter(), time.time()
        loss_sum = seen = 0.0
        batches = feed.batches(epoch)
        # Joining an epoch started early (feed.py) waits for its first batch: that wait counts as the data's.
        joined = time.perf_counter() - started
        waited, step_waits = [joined, joined], []
        for batch in waiting_on(batches, waited, step_waits):
            with _autocast(device, training.precision):
                loss = F.cross_entropy(_forward(model, batch, inputs).float(), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if masks:  # pruned weights stay zero while the others learn
                apply_masks(unwrap(model), masks)
            step += 1
            n = len(batch["label"])
            loss_sum += loss.item() * n
            seen += n
            if rank == 0 and step % training.log_every_n_steps == 0:
                log.info("[raylm] epoch %d/%d step %d loss %.4f", epoch + 1, training.epochs, step, loss.item())
        elapsed = time.perf_counter() - started
        # One worker only for now: with several, each rank's early start meets streaming_split's epoch
        # barrier on a thread while the main threads all-reduce; not yet run under load (issue 25).
        if epoch + 1 < training.epochs and world == 1:
            feed.start(epoch + 1)
        loss_sum, seen, waited_sum, first_wait = _all_reduce_sum([loss_sum, seen, *waited], device)
        metrics = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": loss_sum / max(seen, 1),
            "train_samples_per_s": seen / max(elapsed, 1e-9),
            "train_started": started_at,  # wall clock: the epoch's training window (benchmarks/ingest.py)
            "train_seconds": elapsed,
            # The trainer's wait on its next batch (mean over workers): near 0 when data keeps up.
            "data_wait_s": waited_sum / world,
            "data_wait_fraction": waited_sum / world / max(elapsed, 1e-9),
            "data_wait_first_batch_s": first_wait / world,  # of data_wait_s: the pipeline's start
            # When it waited: this rank's waits summed per tenth of its steps (the first includes the start).
            "data_wait_by_tenth_s": wait_by_tenth(step_waits, joined),
            **evaluate(model, validation_batches(), inputs, device, training.precision),
            "time": time.time(),
            "device": device.type,  # which accelerator trained it, for the record (and GPU tests)
            "workers": world,  # elastic runs (train.num_workers: [min, max]) change it on a restart
            "feed": "memory" if memory is not None else "ray_data",  # where the batches came from (memory_feed.py)
            "torch_threads": torch.get_num_threads(),  # intra-op threads (Ray sets OMP_NUM_THREADS to the worker's CPUs)
        }
        if tracked or scheduled:  # a PBT trial's or a scheduled run's values, and who trained the epoch
            metrics |= {"hyperparameters": epoch_hyperparameters(cfg, tracked, scheduled), "trained_by": str(training.name)}
        if start_record and epoch == start_epoch:
            metrics |= start_record
        if world > 1 and epoch + 1 == training.epochs:  # the final weights, once: were the replicas one model?
            metrics["replica_digests"] = replica_digests(model)
        # The whole history travels in each checkpoint, so a resumed run still knows its past.
        history.append(metrics)
        if rank == 0 and loop_config.get("on_epoch") is not None:  # experiment tracking (MLflow): rank 0 only
            loop_config["on_epoch"](metrics)
        if rank == 0:
            log.info("[raylm] epoch {epoch}/{total} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
                     "val_accuracy {val_accuracy:.4f} ({train_samples_per_s:.0f} samples/s, waited {data_wait_fraction:.0%} on data)".format(total=training.epochs, **metrics))
        if not checkpoint_due(training, history):
            ray.train.report(metrics, checkpoint=None)
        elif rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                write_checkpoint(tmp, model, cfg, labels, epoch=epoch + 1, metrics=metrics, history=history, optimizer=optimizer,
                                 data_fingerprint=loop_config.get("data_fingerprint"))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            drop_stale_optimizer_states(ray.train.get_checkpoint(), epoch + 1)
        else:
            ray.train.report(metrics, checkpoint=None)
    if rank == 0 and hasattr(loop_config.get("on_epoch"), "close"):  # tracking: send what a down server left queued
        loop_config["on_epoch"].close()
