"""Model inputs of the right shape for a config, and a plain loop that fits a small model in a test."""

from __future__ import annotations

import numpy as np
import torch


def _inputs(cfg, batch=3):
    if cfg.task.modality == "image":
        s = cfg.data.image.size
        return (torch.rand(batch, s, s, 3),)
    if cfg.task.modality == "audio":
        a = cfg.data.audio
        return (torch.randn(batch, a.frames, a.n_mfcc),)
    return (torch.randint(0, 100, (batch, 16)), torch.ones(batch, 16, dtype=torch.long))


def fit(model: torch.nn.Module, rows: dict[str, np.ndarray], inputs: tuple[str, ...], epochs: int,
        lr: float = 3e-3, batch_size: int = 32) -> torch.nn.Module:
    """Adam on ``rows[inputs...]`` -> ``rows["label"]``, seeded, shuffled per epoch; the model in eval mode."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(rows["label"]))
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            logits = model(*(torch.from_numpy(rows[name][idx]) for name in inputs))
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(rows["label"][idx]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
