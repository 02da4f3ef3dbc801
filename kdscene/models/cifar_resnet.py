"""CIFAR-style ResNets (He et al., "Deep Residual Learning for Image Recognition", §4.2).

A 3×3 stride-1 stem, three stages of BasicBlocks at strides 1, 2, 2 and a linear head on the global
average pool. ``resnet{8,14,20,32,44,56,110}`` use widths (16, 32, 64); the ``x4`` variants follow the
RepDistiller/CRD convention (stem 32, stages 64, 128, 256). These are the small networks of the KD
literature's CIFAR-100 benchmarks and are fast enough for CPU tests on 32–64 px images.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (1×1 projection when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """ResNet with depth 6n+2 and three stages named ``layer1``..``layer3``.

    Args:
        depth: 6n + 2 (8, 14, 20, 32, 44, 56, 110).
        widths: stem width followed by the three stage widths.
        num_classes: size of the ``fc`` head.
    """

    def __init__(self, depth: int, widths: Sequence[int] = (16, 16, 32, 64), num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, in_ch = [], widths[0]
        for i, (width, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            blocks = [
                BasicBlock(in_ch if j == 0 else width, width, stride if j == 0 else 1) for j in range(n)
            ]
            stages.append((f"layer{i + 1}", nn.Sequential(*blocks)))
            in_ch = width
        for name, stage in stages:
            self.add_module(name, stage)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))
