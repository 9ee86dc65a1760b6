"""``compress.distill.method=distill``: knowledge distillation into a smaller student, the first step of a
recipe (distill -> prune -> fine-tune -> export -> int8).

The student is the teacher made smaller and initialised from it, so it starts near the teacher
instead of from scratch:

- CNN / Conv1D: ``distill.width`` of every hidden conv's channels are kept, the strongest by L2 norm
  (torch-pruning removes them together with every layer that reads them, as structured pruning does);
- text (HF encoders): ``distill.layers`` of the encoder layers kept, evenly spaced (DistilBERT's
  every-other-layer initialisation), and ``distill.width`` of each FFN's intermediate neurons.
  (Transformers 5 dropped ``prune_heads``; the heads stay whole.)

It then trains on the training split against the dense model's logits (Hinton et al.):
``hard_weight * CE(student, label) + (1 - hard_weight) * T^2 * KL(softmax(teacher / T) || softmax(student / T))``.
The teacher's logits are computed once and the student trains in this process on the training rows
held in memory (as compress holds its validation rows; augmentation is not applied): the loss needs
the teacher beside the student, which the Ray Train loop's fixed cross-entropy has no place for.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from raylm.registry import COMPRESSION_METHODS


@dataclass(frozen=True)
class Distiller:
    # (teacher, compress.distill, train rows, inputs, example inputs, num_classes, batch_size, lr, seed) -> student
    apply: Callable[..., nn.Module]


def _encoder_layers(model: nn.Module) -> tuple[nn.Module, str] | None:
    """The HF encoder's ModuleList of layers and its attribute name, None for a non-transformer."""
    for module in model.modules():
        for attr in ("layer", "layers"):
            layers = getattr(module, attr, None)
            if isinstance(layers, nn.ModuleList) and type(module).__name__.endswith("Encoder"):
                return module, attr
    return None


def keep_layers(model: nn.Module, fraction: float) -> nn.Module:
    """Keep ``fraction`` of a transformer's encoder layers, evenly spaced, first and last included."""
    found = _encoder_layers(model)
    if found is None or fraction >= 1:
        return model
    encoder, attr = found
    layers = getattr(encoder, attr)
    n = len(layers)
    keep = max(1, round(n * fraction))
    index = sorted({int(round(i)) for i in np.linspace(0, n - 1, keep)})
    setattr(encoder, attr, nn.ModuleList([layers[i] for i in index]))
    hf_config = getattr(getattr(model, "hf", None), "config", None)
    if hf_config is not None:
        hf_config.num_hidden_layers = len(index)
    return model


def make_student(teacher: nn.Module, dc, example_inputs: tuple[torch.Tensor, ...], num_classes: int) -> nn.Module:
    """The teacher, narrowed (``dc.width``) and for transformers made shallower (``dc.layers``); a copy."""
    from raylm.compress.prune import structured_prune

    student = keep_layers(copy.deepcopy(teacher).eval(), dc.layers)
    if dc.width < 1:
        structured_prune(student, 1 - dc.width, example_inputs, num_classes)
    return student


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                      temperature: float, hard_weight: float) -> torch.Tensor:
    t = temperature
    soft = nn.functional.kl_div(nn.functional.log_softmax(student_logits / t, -1),
                                nn.functional.log_softmax(teacher_logits / t, -1), log_target=True,
                                reduction="batchmean") * t * t
    hard = nn.functional.cross_entropy(student_logits, labels)
    return hard_weight * hard + (1 - hard_weight) * soft


def _logits(model: nn.Module, rows: dict[str, np.ndarray], inputs: tuple[str, ...], batch_size: int = 128) -> torch.Tensor:
    n = len(rows[inputs[0]])
    with torch.inference_mode():
        return torch.cat([model(*(torch.from_numpy(rows[name][i:i + batch_size]) for name in inputs)).float()
                          for i in range(0, n, batch_size)])


def distill(teacher: nn.Module, dc, train: dict[str, np.ndarray], inputs: tuple[str, ...],
            example_inputs: tuple[torch.Tensor, ...], num_classes: int, *, batch_size: int, lr: float,
            seed: int = 0) -> nn.Module:
    """A student (``make_student``) trained ``dc.epochs`` epochs on ``train`` rows against ``teacher``'s logits."""
    torch.manual_seed(seed)
    teacher.eval()
    targets = _logits(teacher, train, inputs)
    labels = torch.from_numpy(np.asarray(train["label"], dtype=np.int64))
    student = make_student(teacher, dc, example_inputs, num_classes)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr)
    steps = dc.epochs * -(-len(labels) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    generator = np.random.default_rng(seed)
    student.train()
    for _ in range(dc.epochs):
        order = generator.permutation(len(labels))
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            logits = student(*(torch.from_numpy(train[name][index]) for name in inputs))
            loss = distillation_loss(logits, targets[index], labels[index], temperature=dc.temperature,
                                     hard_weight=dc.hard_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return student.eval()


def distill_tag(dc, modality: str) -> str:
    layers = f"-layers{round(dc.layers * 100)}" if modality == "text" and dc.layers < 1 else ""
    return f"distill{round(dc.width * 100)}{layers}"


def _copy(teacher: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
    return copy.deepcopy(teacher)


COMPRESSION_METHODS.register("distill", "none", "any")(Distiller(apply=_copy))
COMPRESSION_METHODS.register("distill", "distill", "torch")(Distiller(apply=distill))
