"""Backbone factory: a :class:`BackboneSpec` names a preset and becomes an ``nn.Module``."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kdscene.models.checkpoint import load_checkpoint
from kdscene.models.presets import get_preset


@dataclass
class BackboneSpec:
    """Everything needed to rebuild a network, and nothing that is a tensor.

    Args:
        name: a preset name (``resnet50``, ``mobilenet_v2``, ``cifar_resnet20`` ...).
        num_classes: classifier size; ``None`` means "take it from the data module".
        layers: module paths to tap; ``None`` uses the preset's distillation layers.
        head: the classifier module whose input is the pooled vector; ``None`` uses the preset's.
        checkpoint: local weights to load strictly (``None``: random initialisation).
    """

    name: str
    num_classes: int | None = None
    layers: list[str] | None = None
    head: str | None = None
    checkpoint: str | None = None

    @property
    def tap_layers(self) -> tuple[str, ...]:
        return tuple(self.layers) if self.layers else get_preset(self.name).layers

    @property
    def tap_head(self) -> str:
        return self.head or get_preset(self.name).head


def build_backbone(spec: BackboneSpec) -> nn.Module:
    """Build the network named by ``spec`` and load its checkpoint if one is given."""
    if spec.num_classes is None or spec.num_classes < 1:
        raise ValueError(f"backbone {spec.name!r} needs num_classes >= 1, got {spec.num_classes}")
    model = get_preset(spec.name).build(spec.num_classes)
    if spec.checkpoint:
        load_checkpoint(model, spec.checkpoint)
    return model
