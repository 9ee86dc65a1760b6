"""Image classifiers over NHWC float images in [0, 1] (the article's layout and scaling)."""

from __future__ import annotations

import torch
from torch import nn

from raylm.registry import MODELS


class SeedCNN(nn.Module):
    """The article's Keras CNN: Conv2D(32, 3x3, relu) -> MaxPool(2) -> Flatten -> Dense(classes)."""

    def __init__(self, num_classes: int, size: int = 32, channels: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3), nn.ReLU(), nn.MaxPool2d(2))
        side = (size - 2) // 2
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Data stays NHWC end to end (as in Keras and OpenCV); torch convolutions want NCHW.
        return self.classifier(self.features(images.permute(0, 3, 1, 2)))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A CIFAR-style ResNet (3 stages of basic blocks); size-agnostic thanks to global pooling."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64), blocks_per_stage: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers: list[nn.Module] = []
        c_in = widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                layers.append(BasicBlock(c_in, width, 2 if i > 0 and j == 0 else 1))
                c_in = width
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(images.permute(0, 3, 1, 2))))


@MODELS.register("image", "seed_cnn")
def build_seed_cnn(*, cfg, num_classes: int, load_pretrained: bool = True, channels: int = 32) -> nn.Module:
    return SeedCNN(num_classes, size=cfg.data.image.size, channels=channels)


@MODELS.register("image", "resnet_small")
def build_resnet_small(
    *, cfg, num_classes: int, load_pretrained: bool = True, widths: list[int] = (16, 32, 64), blocks_per_stage: int = 1
) -> nn.Module:
    return ResNetSmall(num_classes, tuple(widths), blocks_per_stage)
