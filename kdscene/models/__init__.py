"""Backbones: presets, a factory and checkpoint loading. No download ever happens here."""

from kdscene.models.checkpoint import load_checkpoint
from kdscene.models.factory import BackboneSpec, build_backbone
from kdscene.models.presets import PRESETS, get_preset

__all__ = ["PRESETS", "BackboneSpec", "build_backbone", "get_preset", "load_checkpoint"]
