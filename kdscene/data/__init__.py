"""Dataset readers (plain classes, one per on-disk layout), the one SceneDataModule, synthetic scenes.

The readers import no Lightning: ``SceneDataModule`` (the only Lightning class here) is imported on
first access, so ``from kdscene.data import MITIndoor67`` works in a project without Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdscene.data.ade20k import ADE20KScenes
from kdscene.data.cifar100 import CIFAR100, CIFAR100_MEAN, CIFAR100_STD
from kdscene.data.dataset import ImageListDataset, build_transforms
from kdscene.data.imagenet import ImageNet
from kdscene.data.mit_indoor import MITIndoor67
from kdscene.data.places365 import Places365
from kdscene.data.reader import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KINETICS_MEAN,
    KINETICS_STD,
    CorruptImageError,
    DatasetLayoutError,
    Reader,
    Samples,
)
from kdscene.data.sampling import EpochSampler
from kdscene.data.sun397 import SUN397
from kdscene.data.synthetic import SyntheticScenes, generate_synthetic_scenes

if TYPE_CHECKING:
    from kdscene.data.datamodule import SceneDataModule


def __getattr__(name: str) -> Any:
    if name == "SceneDataModule":
        from kdscene.data.datamodule import SceneDataModule

        return SceneDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ADE20KScenes",
    "CIFAR100",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "CorruptImageError",
    "DatasetLayoutError",
    "EpochSampler",
    "ImageListDataset",
    "ImageNet",
    "MITIndoor67",
    "Places365",
    "Reader",
    "SUN397",
    "SceneDataModule",
    "Samples",
    "SyntheticScenes",
    "build_transforms",
    "generate_synthetic_scenes",
]
