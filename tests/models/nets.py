"""Small user-style networks for the backbone tests (module level: picklable and Hydra-importable)."""

from __future__ import annotations

from torch import Tensor, nn


def _stage(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 2, 1), nn.BatchNorm2d(out_ch), nn.ReLU())


class TinyNet(nn.Module):
    """Stem (stride 2), stages ``s1``..``s4`` (strides 4..32), a global pool and ``fc``."""

    def __init__(self, num_classes: int = 10, width: int = 4) -> None:
        super().__init__()
        self.stem = _stage(3, width)
        self.s1 = _stage(width, 2 * width)
        self.s2 = _stage(2 * width, 4 * width)
        self.s3 = _stage(4 * width, 8 * width)
        self.s4 = _stage(8 * width, 8 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.s4(self.s3(self.s2(self.s1(self.stem(x)))))
        return self.fc(self.pool(x).flatten(1))


class FixedNet(TinyNet):
    """A network whose constructor has no ``num_classes``: its ``head`` ends in a 10-way Linear."""

    def __init__(self, width: int = 4) -> None:
        super().__init__(num_classes=10, width=width)
        del self.fc
        self.head = nn.Sequential(nn.Linear(8 * width, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x: Tensor) -> Tensor:
        x = self.s4(self.s3(self.s2(self.s1(self.stem(x)))))
        return self.head(self.pool(x).flatten(1))


class SharedPoolNet(nn.Module):
    """Downsamples with one max-pool module called three times; its last call ends the stride-8 stage."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.stage1 = nn.Conv2d(8, 8, 3, 1, 1)
        self.stage2 = nn.Conv2d(8, 8, 3, 1, 1)
        self.down = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage1(self.down(self.stem(x)))  # stride 2
        x = self.stage2(self.down(x))  # stride 4
        x = self.down(x)  # stride 8: only the shared module gives it
        return self.fc(x.mean((2, 3)))


class TokenNet(nn.Module):
    """A ViT-like network: a patch embedding, then (B, N, D) tokens up to the classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 16, 16)
        self.blocks = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 16))
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.blocks(self.patch(x).flatten(2).transpose(1, 2))
        return self.head(tokens.mean(1))


class ConvHeadNet(TinyNet):
    """Classifies with a 1×1 convolution and a global pool: no ``nn.Linear`` at all."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(num_classes=num_classes)
        del self.fc
        self.classifier = nn.Conv2d(32, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.s4(self.s3(self.s2(self.s1(self.stem(x)))))
        return self.pool(self.classifier(x)).flatten(1)


class TupleNet(TinyNet):
    """Returns (logits, features): not a plain classifier."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.s4(self.s3(self.s2(self.s1(self.stem(x)))))
        return self.fc(self.pool(x).flatten(1)), x
