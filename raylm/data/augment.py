"""Training-time augmentation as one batched Ray Data stage per modality (train split only).

Every op has a probability or a strength and is the identity at zero, so the all-zero default
policy adds no stage at all. Ops work on a whole batch with numpy; images take one
``cv2.warpAffine`` per image (OpenCV has no batched warp) whose matrix composes rotation, random
resized crop and flip, computed for the whole batch at once.

Determinism. Ray Data re-executes the pipeline every epoch, on whichever worker, in whatever
batch boundaries the scheduler picks, and the UDF is not told the epoch. So the randomness of a
sample is a pure function of ``(train.seed, epoch, a stable key of the sample, op slot)``:
- the key is a hash of the decoded sample's content, so it is the same on every node and run and
  does not depend on batching, shuffling or which worker runs the task (deterministic per worker
  for free: the worker does not enter the formula at all);
- the epoch comes from :class:`EpochClock`, a tiny named actor the training loop sets at the start
  of each epoch (same value from every rank; Ray Data's streaming split starts an epoch only once
  all ranks ask for it, so no batch of epoch e+1 is produced before every rank has set e+1). A
  resumed run sets the real epoch number, so it sees the same augmentations as an uninterrupted run;
- draws come from a counter-based hash (splitmix64 of key, slot, index), vectorised over the
  batch, instead of one seeded ``Generator`` per sample; each op has its own slot, so switching
  one op on or off leaves the others' draws unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The ops moved one file down (augment_ops.py, below the modality classes that call them); their names
# stay importable from here.
from raylm.data.augment_ops import (  # noqa: F401
    _between,
    _mix,
    _normal,
    _uniform,
    augment_frames,
    augment_images,
    augment_tokens,
    image_affines,
    sample_keys,
    sample_seeds,
)
from raylm.data.text import text_special_ids  # noqa: F401  (moved to text.py, where the tokenizer is)


# --------------------------------------------------------------------------------------------
# the Ray Data stage


class EpochClock:
    """Holds the current epoch of each training run for the augmentation UDFs (see module doc).

    One small actor per cluster (named, detached, 0 CPUs, on the head node) serves every run by run id."""

    def __init__(self) -> None:
        self._epochs: dict[str, int] = {}

    def set(self, run_id: str, epoch: int) -> None:
        self._epochs[run_id] = epoch

    def get(self, run_id: str) -> int:
        return self._epochs.get(run_id, 0)


_CLOCK_NAME, _CLOCK_NAMESPACE = "raylm-augment-epoch-clock", "raylm"
_clock_handles: dict[str, Any] = {}


def _clock():
    import ray

    from raylm.runtime import ensure_ray

    ensure_ray()  # as Ray Data would: a lazily built pipeline may be the first Ray call
    # Keyed by node id: a process that shut Ray down and started a new one gets a fresh handle.
    node = ray.get_runtime_context().get_node_id()
    if node not in _clock_handles:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor = ray.remote(num_cpus=0)(EpochClock)
        _clock_handles.clear()
        # Pinned to the head node (hard affinity, 0 CPUs): the autoscaler never removes the head,
        # while a worker node that goes idle is scaled down, and a detached clock placed there would
        # die with it and fail every run that shares it. An explicit strategy also keeps it out of
        # any placement group: created from a sweep trial, the clock was once captured into that
        # trial's group and died with it (one of 12 trials failed).
        _clock_handles[node] = actor.options(name=_CLOCK_NAME, namespace=_CLOCK_NAMESPACE, lifetime="detached",
                                             get_if_exists=True,
                                             scheduling_strategy=NodeAffinitySchedulingStrategy(_head_node_id() or node,
                                                                                                soft=False)
                                             ).remote()
    return _clock_handles[node]


def start_clock() -> None:
    """Start the clock's actor without waiting for it (a sweep does, beside Tune's start, so that its
    first trials do not wait on the actor's process)."""
    _clock()


def _head_node_id() -> str | None:
    """The live head node (it carries Ray's ``node:__internal_head__`` resource)."""
    import ray

    return next((n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n["Resources"]),
                None)


# Epoch clocks kept in this process: a one-worker loop fed from memory (raylm/data/arrays.py) augments
# in the process that sets the epoch, so no actor call is needed. Keyed like the cluster's clock.
_local_epochs: dict[str, int] = {}


def register_local_clock(run_id: str) -> str:
    _local_epochs[run_id] = 0
    return run_id


def local_epoch(run_id: str | None) -> int:
    return _local_epochs.get(run_id, 0) if run_id is not None else 0


def set_epoch(run_id: str | None, epoch: int) -> None:
    """Called by the training loop at the start of every epoch (a no-op without augmentation)."""
    if run_id in _local_epochs:
        _local_epochs[run_id] = epoch
        return
    if run_id is not None:
        import ray

        ray.get(_clock().set.remote(run_id, epoch))


def current_epoch(run_id: str | None) -> int:
    if run_id is None:
        return 0
    import ray

    return ray.get(_clock().get.remote(run_id))


def is_identity(policy: Any) -> bool:
    """True when every probability/strength of the policy is zero (no stage is added)."""
    from raylm.config import AudioAugmentConfig, ImageAugmentConfig, TextAugmentConfig

    if policy is None:  # a modality without augmentation
        return True
    if isinstance(policy, ImageAugmentConfig):
        return (policy.rotate_p == 0 or policy.max_rotation == 0) and (policy.crop_p == 0 or policy.crop_scale_min == 1) \
            and policy.hflip_p == 0 and policy.brightness == 0 and policy.contrast == 0 \
            and (policy.cutout_p == 0 or policy.cutout_size == 0)
    if isinstance(policy, AudioAugmentConfig):
        return policy.noise_p == 0 and (policy.shift_p == 0 or policy.max_shift == 0) \
            and (policy.time_masks == 0 or policy.time_mask_width == 0) and (policy.freq_masks == 0 or policy.freq_mask_width == 0)
    if isinstance(policy, TextAugmentConfig):
        return policy.dropout_p == 0 and policy.swap_p == 0 and policy.delete_p == 0
    raise TypeError(f"not an augmentation policy: {type(policy).__name__}")


def augment_batch(batch: dict[str, np.ndarray], *, modality: str, policy: Any, seed: int, epoch: int,
                  extra: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Augment one decoded batch for a given epoch (pure: same inputs, same output); ``extra``: what
    the modality record's ``augment_extra`` gave (e.g. a tokenizer's special ids)."""
    from raylm.data.modality import modality_record

    record = modality_record(modality)
    if record.augment is None:
        return dict(batch)
    seeds = sample_seeds(sample_keys(batch[record.inputs[0]]), seed, epoch)
    return dict(batch) | record.augment(batch, seeds, policy, extra or {})


def _augment_udf(batch: dict[str, np.ndarray], *, run_id: str | None, schedule: list[dict[str, Any]] | None = None,
                 **kwargs: Any) -> dict[str, np.ndarray]:
    epoch = current_epoch(run_id)
    if schedule is not None:  # augment.schedule: this epoch's values over the fixed policy
        kwargs["policy"] = scheduled_policy(kwargs["policy"], schedule, epoch, kwargs["modality"])
    return augment_batch(batch, epoch=epoch, **kwargs)


def scheduled_policy(policy: Any, schedule: list[dict[str, Any]], epoch: int, modality: str) -> Any:
    """The policy a scheduled run (``augment.schedule``, raylm/data/schedule.py) uses at ``epoch``."""
    from raylm.data.schedule import policy_at

    return policy_at(policy, schedule, epoch, modality)


def policy_for(cfg) -> Any:
    """The ``augment.<modality>`` section; None for a modality without augmentation."""
    return getattr(cfg.augment, cfg.task.modality, None)


def add_augment_stage(train, cfg, *, batch_size: int):
    """``(dataset, run_id)``: the train dataset with the augmentation stage, or unchanged and
    ``None`` when the policy is the identity."""
    import uuid

    from raylm.data.modality import modality_record

    from raylm.data.schedule import run_schedule

    policy = policy_for(cfg)
    schedule = run_schedule(cfg) if policy is not None else None
    if is_identity(policy) and all(is_identity(scheduled_policy(policy, schedule, e, cfg.task.modality))
                                   for e in range(len(schedule or []))):
        return train, None
    run_id = uuid.uuid4().hex  # one clock entry per built pipeline: concurrent runs never share one
    set_epoch(run_id, 0)
    record = modality_record(cfg.task.modality)
    kwargs: dict[str, Any] = {"run_id": run_id, "modality": record.name, "policy": policy, "seed": cfg.train.seed,
                              "extra": record.augment_extra(cfg) if record.augment_extra else None}
    if schedule is not None:
        kwargs["schedule"] = schedule
    return train.map_batches(_augment_udf, batch_size=batch_size, batch_format="numpy", fn_kwargs=kwargs), run_id
