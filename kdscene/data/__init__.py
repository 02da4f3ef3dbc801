"""Scene DataModules reading the datasets' real on-disk layouts, and the built-in synthetic scenes."""

from kdscene.data.ade20k import ADE20KSceneDataModule
from kdscene.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KINETICS_MEAN,
    KINETICS_STD,
    CorruptImageError,
    DatasetLayoutError,
    ImageListDataset,
    SceneDataModule,
)
from kdscene.data.cifar100 import CIFAR100_MEAN, CIFAR100_STD, CIFAR100DataModule
from kdscene.data.mit_indoor import MITIndoor67DataModule
from kdscene.data.places365 import Places365DataModule
from kdscene.data.sun397 import SUN397DataModule
from kdscene.data.synthetic import SyntheticScenesDataModule, generate_synthetic_scenes

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "ADE20KSceneDataModule",
    "CIFAR100DataModule",
    "CorruptImageError",
    "DatasetLayoutError",
    "ImageListDataset",
    "MITIndoor67DataModule",
    "Places365DataModule",
    "SUN397DataModule",
    "SceneDataModule",
    "SyntheticScenesDataModule",
    "generate_synthetic_scenes",
]
