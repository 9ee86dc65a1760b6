"""Model builders, looked up through ``raylm.registry.MODELS`` by ``(modality, name, backend)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raylm.registry import MODELS

if TYPE_CHECKING:
    import torch

    from raylm.config import RaylmConfig


def build_model(cfg: RaylmConfig, num_classes: int, *, load_pretrained: bool = True) -> torch.nn.Module:
    """Build the torch model that ``cfg.model`` names for ``num_classes`` outputs.

    ``load_pretrained=False`` builds the architecture only (weights come from a checkpoint).
    """
    builder = MODELS.get(cfg.task.modality, cfg.model.name, cfg.model.backend)
    # Checked again here: a config built with model_construct or changed after validation skips it.
    MODELS.check_kwargs(cfg.task.modality, cfg.model.name, cfg.model.backend, cfg.model.kwargs, field="model.kwargs")
    return builder(cfg=cfg, num_classes=num_classes, load_pretrained=load_pretrained, **cfg.model.kwargs)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
