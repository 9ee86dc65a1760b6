"""Model inputs of the right shape for a config."""

from __future__ import annotations

import torch


def _inputs(cfg, batch=3):
    if cfg.task.modality == "image":
        s = cfg.data.image.size
        return (torch.rand(batch, s, s, 3),)
    if cfg.task.modality == "audio":
        a = cfg.data.audio
        return (torch.randn(batch, a.frames, a.n_mfcc),)
    return (torch.randint(0, 100, (batch, 16)), torch.ones(batch, 16, dtype=torch.long))
