"""Image classifiers for synthetic-data studies: the reports' small custom CNN and a CIFAR ResNet-18.

Both map uint8-derived float images ``[B, C, H, W]`` (normalised by the trainer) to class logits, work
at any input size (global average pooling before the head) and any channel count, and are built by
name with :func:`build_classifier`, so a study's config names its classifier.

* ``small_cnn`` - the course reports' "custom CNN": three conv blocks ``conv3x3 - BatchNorm - ReLU -
  max-pool 2`` with 32, 64 and 128 channels, then dropout and a linear head. Small enough that a
  Fashion-MNIST arm trains in seconds to a minute on a laptop CPU.
* ``resnet18`` - ResNet-18 (He et al. 2016) in the CIFAR form: a 3x3 stem without max-pool, four stages
  of two basic blocks (64, 128, 256, 512 channels, stride 2 from the second stage on), global average
  pooling and a linear head (11M parameters); the standard CIFAR-10 baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dreamdata.errors import ConfigError

CLASSIFIERS = ("small_cnn", "resnet18")


class SmallCNNClassifier(nn.Module):
    """Three ``conv - BN - ReLU - pool`` blocks (32, 64, 128 channels), dropout, linear head."""

    widths = (32, 64, 128)

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.25):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in self.widths:
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))  # global average pooling: any input size works
        return self.head(self.dropout(h))


class BasicBlock(nn.Module):
    """He et al. 2016's basic residual block: two 3x3 convs, identity or 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stem, stages (64, 128, 256, 512) x 2 blocks, average pool, linear."""

    widths = (64, 128, 256, 512)

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        previous = 64
        for stage, width in enumerate(self.widths):
            stride = 1 if stage == 0 else 2
            blocks += [BasicBlock(previous, width, stride), BasicBlock(width, width, 1)]
            previous = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def build_classifier(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """The classifier called ``name`` (one of :data:`CLASSIFIERS`)."""
    if name == "small_cnn":
        return SmallCNNClassifier(in_channels, num_classes)
    if name == "resnet18":
        return ResNet18(in_channels, num_classes)
    raise ConfigError(f"classifier {name!r}: unknown; expected one of {', '.join(CLASSIFIERS)}")
