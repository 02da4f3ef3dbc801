"""Scene DataModules reading the datasets' real on-disk layouts, and the built-in synthetic scenes."""

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
from kdscene.data.mit_indoor import MITIndoor67DataModule
from kdscene.data.synthetic import SyntheticScenesDataModule, generate_synthetic_scenes

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "CorruptImageError",
    "DatasetLayoutError",
    "ImageListDataset",
    "MITIndoor67DataModule",
    "SceneDataModule",
    "SyntheticScenesDataModule",
    "generate_synthetic_scenes",
]
