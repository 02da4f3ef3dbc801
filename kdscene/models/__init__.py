"""Backbones: any preset, torchvision, timm or own network, its taps and head, and its weights.

Nothing is downloaded here except torchvision's named ``weights`` (into the torch hub cache) and timm's
``pretrained`` weights, and only when a spec asks for them.
"""

from kdscene.models.checkpoint import load_checkpoint
from kdscene.models.compiled import compile_network
from kdscene.models.factory import BackboneSpec, ResolvedBackbone, build_backbone
from kdscene.models.presets import PRESETS, get_preset
from kdscene.models.pretrained import InitReport, init_from_file, init_from_state
from kdscene.models.taps import find_head, find_taps, split_parameters

__all__ = [
    "PRESETS",
    "BackboneSpec",
    "InitReport",
    "ResolvedBackbone",
    "build_backbone",
    "compile_network",
    "find_head",
    "find_taps",
    "get_preset",
    "init_from_file",
    "init_from_state",
    "load_checkpoint",
    "split_parameters",
]
