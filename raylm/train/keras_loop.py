"""The Keras backend's per-worker loop, run by Ray Train's TensorflowTrainer.

Each worker joins a ``MultiWorkerMirroredStrategy`` (Ray sets ``TF_CONFIG``), reads its shard of
the same Ray Data datasets the torch loop reads, and reports the same metrics. Checkpoints hold the
Keras weights (HDF5, no pickle), the optimizer's variables (``.npz``, loaded with
``allow_pickle=False``) and the same ``raylm.json`` as torch checkpoints, so ``fit`` and the
resume path treat both backends alike.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from raylm.config import RaylmConfig
from raylm.data import MODEL_INPUTS
from raylm.data.augment import set_epoch as set_augment_epoch
from raylm.data.shards import local_shuffle
from raylm.train.checkpoint import (
    CheckpointError,
    LoadedModel,
    checkpoint_config,
    drop_stale_optimizer_states,
    read_meta,
    write_meta,
)

# A logger, not print: Ray Train V2 both tees and logs a worker's print(), so it shows twice.
log = logging.getLogger("raylm.train")

WEIGHTS = "model.weights.h5"  # the .h5 suffix selects Keras 2's HDF5 weights format
OPTIMIZER = "optimizer.npz"
# TF 2.21's oneDNN MaxPool gradient aborts the process ("Check failed: dtype() == expected_dtype")
# under MultiWorkerMirroredStrategy; TF's own kernels are used instead.
WORKER_ENV_VARS = {"TF_ENABLE_ONEDNN_OPTS": "0"}


def compile_model(model: Any, lr: float, weight_decay: float = 0.0) -> Any:
    """Compile for integer labels and logits outputs (what every raylm model emits)."""
    from raylm.models.keras import keras_api

    keras = keras_api()
    optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay) if weight_decay else \
        keras.optimizers.Adam(learning_rate=lr)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def write_keras_checkpoint(directory: str | os.PathLike[str], model: Any, cfg: RaylmConfig, labels: list[str], *,
                           epoch: int, metrics: dict[str, Any] | None = None, history: list[dict[str, Any]] | None = None,
                           data_fingerprint: str | None = None, save_optimizer: bool = True) -> Path:
    import numpy as np

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(out / WEIGHTS))
    optimizer = getattr(model, "optimizer", None)
    if save_optimizer and optimizer is not None and optimizer.variables:
        np.savez(out / OPTIMIZER, *[np.asarray(v.numpy()) for v in optimizer.variables])
    write_meta(out, cfg, labels, epoch=epoch, metrics=metrics, history=history, data_fingerprint=data_fingerprint)
    return out


def restore_keras_state(directory: str | os.PathLike[str], model: Any) -> int:
    """Load weights (and optimizer variables, if saved) into a compiled model; returns epochs done.

    Call inside the strategy's scope: the optimizer's slots are created here.
    """
    import numpy as np

    directory = Path(directory)
    meta = read_meta(directory)
    if meta["config"]["model"]["backend"] != "keras":
        raise CheckpointError(f"{directory}: a {meta['config']['model']['backend']} checkpoint, not a keras one")
    try:
        model.load_weights(str(directory / WEIGHTS))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory}/{WEIGHTS}: does not fit the configured model or is corrupted ({err})") from None
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and (directory / OPTIMIZER).exists():
        optimizer.build(model.trainable_variables)
        with np.load(directory / OPTIMIZER, allow_pickle=False) as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(optimizer.variables):
            raise CheckpointError(f"{directory}/{OPTIMIZER}: {len(values)} arrays for {len(optimizer.variables)} variables")
        for variable, value in zip(optimizer.variables, values):
            variable.assign(value)
    return int(meta["epoch"])


def load_keras_checkpoint(directory: str | os.PathLike[str]) -> LoadedModel:
    """Rebuild a trained Keras model from a checkpoint alone."""
    from raylm.models import build_model

    directory = Path(directory)
    meta = read_meta(directory)
    if meta["config"]["model"]["backend"] != "keras":
        raise CheckpointError(f"{directory}: a {meta['config']['model']['backend']} checkpoint, not a keras one")
    cfg = checkpoint_config(directory)
    model = build_model(cfg, len(meta["labels"]), load_pretrained=False)
    try:
        model.load_weights(str(directory / WEIGHTS))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory}/{WEIGHTS}: does not fit the configured model or is corrupted ({err})") from None
    return LoadedModel(model, cfg, meta["labels"], meta)


def keras_train_loop(loop_config: dict[str, Any]) -> None:
    import ray.train
    import tensorflow as tf
    from ray.train.tensorflow import prepare_dataset_shard

    from raylm.models import build_model
    from raylm.models.keras import keras_api
    from raylm.train.loop import checkpoint_due

    keras = keras_api()
    cfg: RaylmConfig = loop_config["config"]
    labels: list[str] = loop_config["labels"]
    training = cfg.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    (feature,) = MODEL_INPUTS[cfg.task.modality]

    keras.utils.set_random_seed(training.seed)  # identical init on every rank
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    start_epoch, history = 0, []
    # The newer of Ray's (a restarted worker group's, or the last one its controller registered before a
    # Ctrl-C) and the driver's choice, the newest whole checkpoint in storage (train/__init__.py).
    from raylm.train.checkpoint import newest_checkpoint, ray_checkpoint

    chosen = loop_config.get("resume_checkpoint")
    resume = newest_checkpoint([ray.train.get_checkpoint(),
                                ray_checkpoint(chosen, training.storage_options) if chosen else None],
                               training.storage_options)
    with strategy.scope():
        model = compile_model(build_model(cfg, len(labels)), training.lr, training.weight_decay)
        if resume is not None:
            with resume.as_directory() as directory:
                start_epoch = restore_keras_state(directory, model)
                history = read_meta(directory).get("history", [])
            if rank == 0:
                log.info("[raylm] resumed from %s after epoch %d", resume.path, start_epoch)

    class _CountBatches(keras.callbacks.Callback):
        batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation")
    for epoch in range(start_epoch, training.epochs):
        set_augment_epoch(loop_config.get("augment_run_id"), epoch)  # before this epoch's data is produced
        # Ray Data has already split the rows equally between workers (so every worker runs the
        # same number of steps, which the strategy's collectives require): TF must not re-shard.
        train_tf = prepare_dataset_shard(train_shard.to_tf(
            feature, "label", batch_size=training.batch_size, **local_shuffle(cfg, epoch=epoch, rank=rank, world=world)))
        counter = _CountBatches()
        started = time.perf_counter()
        fitted = model.fit(train_tf, epochs=epoch + 1, initial_epoch=epoch, callbacks=[counter], verbose=0)
        elapsed = time.perf_counter() - started
        val_tf = prepare_dataset_shard(val_shard.to_tf(feature, "label", batch_size=training.batch_size))
        val_loss, val_accuracy = model.evaluate(val_tf, verbose=0)
        # Keras reduces loss and metrics over all workers; the sample count is an upper bound
        # (the last batch of an epoch may be partial).
        metrics = {
            "epoch": epoch + 1,
            "step": int(model.optimizer.iterations.numpy()),
            "train_loss": float(fitted.history["loss"][-1]),
            "train_samples_per_s": counter.batches * training.batch_size * world / max(elapsed, 1e-9),
            "val_loss": float(val_loss),
            "val_accuracy": float(val_accuracy),
            "time": time.time(),
        }
        history.append(metrics)
        if rank == 0 and loop_config.get("on_epoch") is not None:  # experiment tracking (MLflow): rank 0 only
            loop_config["on_epoch"](metrics)
        if rank == 0:
            log.info("[raylm] epoch {epoch}/{total} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
                     "val_accuracy {val_accuracy:.4f}".format(total=training.epochs, **metrics))
        if not checkpoint_due(training, history):  # train.checkpoint_every; the best and the last always saved
            ray.train.report(metrics, checkpoint=None)
            continue
        # Every rank saves: reading the strategy's sync-on-read variables is a collective op, so a
        # save on rank 0 alone would wait forever (checkpoint_due answers alike on every rank: Keras
        # reduces val_accuracy over the workers). Only rank 0's copy is reported.
        with tempfile.TemporaryDirectory() as tmp:
            write_keras_checkpoint(tmp, model, cfg, labels, epoch=epoch + 1, metrics=metrics, history=history,
                                   data_fingerprint=loop_config.get("data_fingerprint"))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)
        if rank == 0:
            drop_stale_optimizer_states(ray.train.get_checkpoint(), epoch + 1)
    if rank == 0 and hasattr(loop_config.get("on_epoch"), "close"):  # tracking: send what a down server left queued
        loop_config["on_epoch"].close()
