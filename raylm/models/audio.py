"""Audio classifiers over MFCC frames shaped ``(frames, n_mfcc)`` (the article's 22-dim frames)."""

from __future__ import annotations

import torch
from torch import nn

from raylm.registry import MODELS


class SeedConv1D(nn.Module):
    """The article's Keras model: Conv1D(32, 3, relu) -> MaxPool1D(2) -> Flatten -> Dense(classes)."""

    def __init__(self, num_classes: int, frames: int, n_mfcc: int = 22, channels: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(n_mfcc, channels, 3), nn.ReLU(), nn.MaxPool1d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels * ((frames - 2) // 2), num_classes))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        # (batch, time, coeffs) as in Keras; Conv1d convolves over the last axis with coeffs as channels.
        return self.classifier(self.features(frames.transpose(1, 2)))


class Conv1DNet(nn.Module):
    """Stronger variant: conv-BN-ReLU blocks with pooling, then global average over time."""

    def __init__(self, num_classes: int, n_mfcc: int = 22, widths: tuple[int, ...] = (64, 128, 128), dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = n_mfcc
        for width in widths:
            layers += [nn.Conv1d(c_in, width, 5, padding=2, bias=False), nn.BatchNorm1d(width), nn.ReLU(), nn.MaxPool1d(2)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, num_classes))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(frames.transpose(1, 2)))


@MODELS.register("audio", "seed_conv1d")
def build_seed_conv1d(*, cfg, num_classes: int, load_pretrained: bool = True, channels: int = 32) -> nn.Module:
    audio = cfg.data.audio
    return SeedConv1D(num_classes, frames=audio.frames, n_mfcc=audio.n_mfcc, channels=channels)


@MODELS.register("audio", "conv1d_net")
def build_conv1d_net(
    *, cfg, num_classes: int, load_pretrained: bool = True, widths: list[int] = (64, 128, 128), dropout: float = 0.1
) -> nn.Module:
    return Conv1DNet(num_classes, n_mfcc=cfg.data.audio.n_mfcc, widths=tuple(widths), dropout=dropout)
