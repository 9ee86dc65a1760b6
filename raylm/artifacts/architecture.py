"""The architecture after pruning, as data: the registry builder plus every tensor's shape.

Structured pruning leaves layers narrower than the builder makes them. Instead of pickling the
module, we rebuild it with its builder and then resize each layer to the recorded shapes before
loading the weights; a shape of a layer we do not know how to resize is a clear error.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from raylm.errors import RaylmError


class ArchitectureError(RaylmError):
    pass


def tensor_shapes(model: nn.Module) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in model.state_dict().items()}


def safetensors_shapes(path: str | os.PathLike[str]) -> dict[str, list[int]]:
    """Shapes from the file's header alone (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {key: list(f.get_slice(key).get_shape()) for key in f.keys()}


def _sync_attributes(module: nn.Module) -> None:
    """Keep the constructor attributes that forward() reads in line with the new tensors."""
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.modules.conv._ConvNd):
        module.out_channels = module.weight.shape[0]
        module.in_channels = module.weight.shape[1] * module.groups
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = module.weight.shape[0] if module.weight is not None else module.running_mean.shape[0]
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(module.weight.shape)
    elif isinstance(module, nn.Embedding):
        module.num_embeddings, module.embedding_dim = module.weight.shape
    else:
        raise ArchitectureError(f"cannot resize a {type(module).__name__}")


def resize_to(model: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Replace every tensor whose shape differs from ``shapes`` by an empty one of that shape."""
    for module_name, module in model.named_modules():
        changed = False
        for store in (module._parameters, module._buffers):
            for key, tensor in list(store.items()):
                full = f"{module_name}.{key}" if module_name else key
                if tensor is None or full not in shapes or list(tensor.shape) == shapes[full]:
                    continue
                fresh = torch.empty(shapes[full], dtype=tensor.dtype)
                store[key] = nn.Parameter(fresh, requires_grad=tensor.requires_grad) if key in module._parameters else fresh
                changed = True
        if changed:
            try:
                _sync_attributes(module)
            except ArchitectureError as err:
                raise ArchitectureError(f"{module_name}: {err} to the recorded shapes") from None
    return model


def load_resized(model: nn.Module, weights: str | os.PathLike[str]) -> nn.Module:
    """Resize ``model`` to the tensors in a safetensors file, then load them strictly."""
    from safetensors.torch import load_model

    path = Path(weights)
    if not path.is_file():
        raise ArchitectureError(f"{path}: no such weights file")
    try:
        resize_to(model, safetensors_shapes(path))
        load_model(model, str(path), strict=True)
    except ArchitectureError:
        raise
    except RuntimeError as err:  # missing/unexpected keys or shapes: another architecture
        raise ArchitectureError(f"{path}: weights do not fit the model: {str(err)[:500]}") from None
    except Exception as err:  # safetensors' own errors for truncated or corrupted headers
        raise ArchitectureError(f"{path}: corrupted ({err})") from None
    return model
