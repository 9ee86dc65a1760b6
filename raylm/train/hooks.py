"""``TrainHooks``: what a stage above training (compression's fine-tune) changes about a run, handed
to the training loop as typed functions, so that training never imports the stages built on it.

    hooks = TrainHooks(initial_weights=partial(load_resized, weights=path), masks=zero_masks,
                       sparsity_schedule=partial(scheduled_masks, target=0.8, scope="global"))
    build_trainer(cfg, hooks=hooks)

The functions travel to every Ray Train worker with the loop's config (pickled by reference:
module-level functions or ``functools.partial`` of them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

Masks = dict[str, torch.Tensor]  # module name -> keep-mask of its weight


@dataclass(frozen=True)
class TrainHooks:
    # Loads the starting weights into the freshly built model (e.g. a pruned model's, resized to
    # its narrower shapes); None: the builder's (pretrained) weights.
    initial_weights: Callable[[nn.Module], None] | None = None
    # The keep-masks of the starting weights (e.g. where they are zero), re-applied after every step.
    masks: Callable[[nn.Module], Masks] | None = None
    # (model, epoch 1-based, epochs) -> the keep-masks to train that epoch with (a ramping sparsity).
    sparsity_schedule: Callable[[nn.Module, int, int], Masks] | None = None


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Multiply each named module's weight by its mask, in place (the Parameter objects stay)."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        weight = modules[name].weight
        weight.mul_(mask.to(weight.device))
