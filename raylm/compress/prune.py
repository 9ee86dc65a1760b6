"""Pruning: unstructured magnitude pruning (zeros in place) and structured pruning (smaller layers).

Unstructured pruning uses ``torch.nn.utils.prune`` and makes the zeros permanent, so the model
keeps its shapes and only compresses on disk (gzip) or with sparse kernels. Structured pruning
uses torch-pruning's dependency graph, which removes whole conv channels / FFN neurons together
with every layer that consumes them, so the pruned model really is smaller and faster.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from raylm.compress.methods import Pruner
from raylm.registry import COMPRESSION_METHODS
from raylm.train.hooks import apply_masks

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and Linear layers: embeddings and norms stay dense (they hold little compute)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _PRUNABLE)]


def magnitude_masks(model: nn.Module, sparsity: float, scope: str = "global") -> dict[str, torch.Tensor]:
    """Keep-masks that drop the smallest-|w| ``sparsity`` of the Conv/Linear weights.

    ``global``: one threshold across layers (layers with many small weights lose more);
    ``layer``: every layer loses the same fraction. torch.nn.utils.prune's L1Unstructured picks
    the weights; applying the masks ourselves keeps the Parameter objects, so this also works
    mid-training, under DDP and an optimizer that hold them.
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"compress.prune.sparsity: {sparsity} is outside [0, 1)")
    if scope not in ("global", "layer"):
        raise ValueError(f"compress.prune.scope: {scope!r} is not global or layer")
    layers = prunable_weights(model)
    if not layers:
        return {}
    method = torch_prune.L1Unstructured(amount=sparsity)
    with torch.no_grad():
        if scope == "layer":
            return {name: method.compute_mask(m.weight, torch.ones_like(m.weight)).bool() for name, m in layers}
        flat = torch.cat([m.weight.detach().flatten() for _, m in layers])
        flat_mask = method.compute_mask(flat, torch.ones_like(flat)).bool()
    masks, offset = {}, 0
    for name, m in layers:
        n = m.weight.numel()
        masks[name] = flat_mask[offset:offset + n].view_as(m.weight)
        offset += n
    return masks


def magnitude_prune(model: nn.Module, sparsity: float, scope: str = "global") -> nn.Module:
    """Zero the smallest-|w| weights in place (see ``magnitude_masks``); returns ``model``."""
    apply_masks(model, magnitude_masks(model, sparsity, scope))
    return model


def gradual_sparsity(target: float, epoch: int, epochs: int) -> float:
    """Zhu & Gupta's cubic schedule (tfmot's ``PolynomialDecay``, power 3): the sparsity to train
    ``epoch`` (1-based) of ``epochs`` at. From 3 epochs on, the ramp ends one epoch early, so the
    model trains a whole epoch around its final mask before it is exported."""
    ramp = epochs - 1 if epochs >= 3 else max(epochs, 1)
    progress = min(max(epoch / ramp, 0.0), 1.0)
    return target * (1 - (1 - progress) ** 3)


def sparsity_stats(model: nn.Module) -> dict[str, float]:
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    prunable = [m.weight for _, m in prunable_weights(model)]
    prunable_total = sum(w.numel() for w in prunable)
    prunable_zero = sum(w.numel() - int(torch.count_nonzero(w)) for w in prunable)
    return {"params": params, "nonzero_params": nonzero,
            "sparsity": prunable_zero / max(prunable_total, 1),  # over Conv/Linear weights
            "overall_sparsity": 1 - nonzero / max(params, 1)}


def zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Where the prunable weights are zero: fine-tuning re-applies these after every step."""
    return {name: (m.weight != 0) for name, m in prunable_weights(model)
            if bool((m.weight == 0).any())}


def scheduled_masks(model: nn.Module, epoch: int, epochs: int, *, target: float, scope: str) -> dict[str, torch.Tensor]:
    """The fine-tune's ``TrainHooks.sparsity_schedule``: magnitude masks at the cubic ramp's sparsity for ``epoch``."""
    return magnitude_masks(model, gradual_sparsity(target, epoch, epochs), scope)


def _output_layer(model: nn.Module, num_classes: int) -> nn.Module:
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not heads:
        raise ValueError(f"no Linear layer with {num_classes} outputs: cannot tell the classifier head")
    return heads[-1]


def structured_prune(model: nn.Module, ratio: float, example_inputs: tuple[torch.Tensor, ...], num_classes: int) -> nn.Module:
    """Remove ``ratio`` of the channels (CNN, Conv1D) or FFN neurons (BERT) by L2 magnitude, in place.

    The input layer's channels (image RGB, MFCC coefficients) and the classifier's outputs are
    fixed by the data and the labels, so those layers are never pruned on that side. For
    transformers only the FFN intermediate neurons are removed: the hidden size is shared by every
    residual connection and the attention heads are left whole.
    """
    import torch_pruning as tp

    if not 0 <= ratio < 1:
        raise ValueError(f"compress.prune.structured_ratio: {ratio} is outside [0, 1)")
    if ratio == 0:
        return model
    model.eval()
    ignored: list[nn.Module] = [_output_layer(model, num_classes)]
    if getattr(model, "hf", None) is not None:
        ignored += [m for name, m in model.named_modules()
                    if isinstance(m, nn.Linear) and not name.endswith("intermediate.dense")]
        ignored += [m for m in model.modules() if isinstance(m, (nn.Embedding, nn.LayerNorm))]
    pruner = tp.pruner.MetaPruner(
        model, example_inputs, importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=ignored, global_pruning=False,
    )
    pruner.step()
    return model


def _magnitude(model: nn.Module, recipe, example_inputs: tuple[torch.Tensor, ...], num_classes: int) -> nn.Module:
    pruning = recipe.prune
    if pruning.schedule == "gradual" and recipe.finetune_epochs:
        return model  # the fine-tune ramps the mask up itself (magnitude_finetune_hooks)
    return magnitude_prune(model, pruning.sparsity, pruning.scope)


def magnitude_finetune_hooks(recipe) -> dict:
    """The zeros stay zeros while fine-tuning; ``gradual``: the mask ramps to its target instead."""
    from functools import partial

    pruning = recipe.prune
    schedule = partial(scheduled_masks, target=pruning.sparsity, scope=pruning.scope) if pruning.schedule == "gradual" else None
    return {"masks": zero_masks, "sparsity_schedule": schedule}


def magnitude_tag(pruning) -> str:
    return f"magnitude{round(pruning.sparsity * 100)}-{pruning.scope}"


COMPRESSION_METHODS.register("prune", "magnitude", "torch")(Pruner(
    tag=magnitude_tag, apply=_magnitude, finetune_hooks=magnitude_finetune_hooks))
COMPRESSION_METHODS.register("prune", "structured", "torch")(Pruner(
    tag=lambda pruning: f"structured{round(pruning.structured_ratio * 100)}",
    apply=lambda model, recipe, example, num_classes: structured_prune(model, recipe.prune.structured_ratio, example, num_classes)))
