"""Fine-tuning a pruned model under Ray Train: the training loop, started from the pruned weights."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from torch import nn

from raylm.config import RaylmConfig


def finetune(cfg: RaylmConfig, model: nn.Module, variant: str) -> nn.Module:
    """``cfg.compress.finetune_epochs`` epochs of data-parallel training from ``model``'s weights.

    The pruner's ``finetune_hooks`` keep its pruning: e.g. magnitude's zeros stay zeros (the loop
    re-applies their masks after each step), and with ``prune.schedule=gradual`` the loop itself
    ramps the sparsity up to its target.
    Returns ``model`` architecture rebuilt with the last epoch's weights.
    """
    from functools import partial

    from safetensors.torch import save_model

    from raylm.artifacts.architecture import load_resized
    from raylm.compress.methods import pruner
    from raylm.train import build_trainer, trains_in_process
    from raylm.train.hooks import TrainHooks

    compression = cfg.compress
    ft_cfg = cfg.override({"train.epochs": compression.finetune_epochs, "train.lr": compression.finetune_lr or cfg.train.lr / 10,
                           "train.resume_from": None})
    root = cfg.run_dir / "compress" / ".finetune"
    root.mkdir(parents=True, exist_ok=True)
    # Train V2 resumes a run found under the same storage path and name; a new fine-tune of the
    # same variant must start from the pruned weights, not from the previous fine-tune's end.
    shutil.rmtree(root / variant, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{variant}-init-", dir=root))
    try:
        save_model(model, str(staging / "model.safetensors"))
        hooks = TrainHooks(initial_weights=partial(load_resized, weights=str(staging / "model.safetensors")),
                           **pruner(compression, cfg.model.backend).finetune_hooks(compression))
        # One CPU worker trains here (Train V2 local mode), as a sweep trial does: a TorchTrainer
        # started from inside an in-process trial waited forever for its controller and worker group.
        trainer, _ = build_trainer(ft_cfg, run_config_overrides={"storage_path": str(root), "name": variant},
                                   hooks=hooks, in_process=trains_in_process(ft_cfg))
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        if result.checkpoint is None:
            raise RuntimeError("fine-tuning finished without a checkpoint")
        with result.checkpoint.as_directory() as directory:
            load_resized(model, Path(directory) / "model.safetensors")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model.eval()
