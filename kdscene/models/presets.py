"""Backbone presets: constructor, distillation taps and classifier head of each named network.

The taps are the ones the DCT paper uses (``Libs/resnet.py``, ``Libs/mobilenetv2.py``): the four stage
outputs of ImageNet ResNets (after each stage's final ReLU) and the four matching MobileNetV2 blocks
(``features[:4]``, ``[4:7]``, ``[7:14]``, ``[14:]``); CIFAR ResNets tap their three stages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torchvision.models as tvm
from torch import nn

from kdscene.models.cifar_resnet import CifarResNet


@dataclass(frozen=True)
class Preset:
    """How to build one named backbone and where to tap it."""

    build: Callable[[int], nn.Module]
    layers: tuple[str, ...]
    head: str


_RESNET_TAPS = ("layer1", "layer2", "layer3", "layer4")
_CIFAR_TAPS = ("layer1", "layer2", "layer3")


def _torchvision(fn: Callable[..., nn.Module], num_classes: int) -> nn.Module:
    return fn(weights=None, num_classes=num_classes)


def _resnet10(num_classes: int) -> nn.Module:
    # torchvision's own ResNet class with one BasicBlock per stage: resnet18's strides and taps at
    # about half its cost, a student that pairs with any ImageNet ResNet teacher.
    return tvm.resnet.ResNet(tvm.resnet.BasicBlock, [1, 1, 1, 1], num_classes=num_classes)


def _cifar(depth: int, widths: tuple[int, ...], num_classes: int) -> nn.Module:
    return CifarResNet(depth, widths, num_classes)


PRESETS: dict[str, Preset] = {
    **{
        name: Preset(partial(_torchvision, getattr(tvm, name)), _RESNET_TAPS, "fc")
        for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    },
    "resnet10": Preset(_resnet10, _RESNET_TAPS, "fc"),
    "mobilenet_v2": Preset(
        partial(_torchvision, tvm.mobilenet_v2),
        ("features.3", "features.6", "features.13", "features.18"),
        "classifier",
    ),
    **{
        f"cifar_resnet{d}": Preset(partial(_cifar, d, (16, 16, 32, 64)), _CIFAR_TAPS, "fc")
        for d in (8, 14, 20, 32, 44, 56, 110)
    },
    **{
        f"cifar_resnet{d}x4": Preset(partial(_cifar, d, (32, 64, 128, 256)), _CIFAR_TAPS, "fc")
        for d in (8, 14, 20, 32)
    },
}


def get_preset(name: str) -> Preset:
    """Return the preset called ``name``; raise listing the known names otherwise."""
    if name not in PRESETS:
        raise KeyError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
