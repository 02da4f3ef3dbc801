"""CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", tech. report 2009).

60,000 32×32 images (50,000 training, 10,000 test) in 100 fine classes, read from the python pickle
release that ``torchvision.datasets.CIFAR100`` downloads: ``cifar-100-python/{train,test,meta}``.
kdscene unpickles the files itself (same arrays, labels and class order as torchvision) because
torchvision checks their MD5 sums and so cannot read anything but the exact official files; nothing is
downloaded. The files are pickles: read only copies you trust.

Defaults follow the CIFAR recipe of RepDistiller (Tian et al., "Contrastive Representation
Distillation", ICLR 2020), also used by the SRM and FAM benchmarks: ``RandomCrop(32, padding=4)`` +
horizontal flip for training, no augmentation for evaluation, mean ``(0.5071, 0.4865, 0.4409)``, std
``(0.2673, 0.2564, 0.2762)``, batch 64. Labels are the fine labels.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T

from kdscene.data.base import SceneDataModule, layout_error

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

CIFAR100_LAYOUT = """\
  (root holds cifar-100-python/, or is that folder; the python version of the official release)
  cifar-100-python/train     pickle: {"data": uint8 array (50000, 3072), "fine_labels": [...], ...}
  cifar-100-python/test      same, 10,000 images
  cifar-100-python/meta      pickle: {"fine_label_names": [100 names], "coarse_label_names": [...]}"""

_FILES = {"train": "train", "val": "test"}


class ArrayImageDataset(Dataset):
    """(image, label) pairs from an in-memory ``(N, H, W, 3)`` uint8 array.

    Args:
        images: the images, channels last.
        labels: one class index per image.
        transform: applied to each image as an RGB PIL image.
    """

    def __init__(self, images: np.ndarray, labels: Sequence[int], transform: T.Compose | None = None) -> None:
        self.images, self.labels, self.transform = images, list(labels), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = Image.fromarray(self.images[index])
        return (self.transform(image) if self.transform else image), self.labels[index]


def cifar_transforms(
    train: bool,
    image_size: int,
    resize: int | None,
    crop_padding: int,
    hflip: bool,
    mean: Sequence[float],
    std: Sequence[float],
) -> T.Compose:
    """The padded-random-crop recipe for training, the plain (centre-cropped) image for evaluation."""
    steps: list = [T.Resize(resize)] if resize else []
    if train:
        steps.append(T.RandomCrop(image_size, padding=crop_padding or None))
        if hflip:
            steps.append(T.RandomHorizontalFlip())
    elif resize and resize != image_size:
        steps.append(T.CenterCrop(image_size))
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


class CIFAR100DataModule(SceneDataModule):
    """CIFAR-100 from torchvision's pickle layout (see ``LAYOUT``); validation/test = the test set.

    Args:
        root: the folder holding ``cifar-100-python/`` (torchvision's ``root``) or that folder.
        image_size: crop side (32 = the native size).
        resize: resize the 32×32 images first (e.g. for ImageNet-style backbones); ``None`` keeps them.
        crop_padding: zero padding of the training random crop (4 in RepDistiller).
        hflip, mean, std, batch_size, eval_batch_size, num_workers, pin_memory: as in
            :class:`~kdscene.data.base.SceneDataModule`.
    """

    LAYOUT = CIFAR100_LAYOUT
    NAME = "CIFAR-100"

    def __init__(
        self,
        root: str | Path,
        image_size: int = 32,
        resize: int | None = None,
        crop_padding: int = 4,
        hflip: bool = True,
        mean: Sequence[float] = CIFAR100_MEAN,
        std: Sequence[float] = CIFAR100_STD,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            root,
            image_size=image_size,
            resize=resize,
            hflip=hflip,
            mean=mean,
            std=std,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )
        self.crop_padding = crop_padding

    @property
    def data_dir(self) -> Path:
        nested = self.root / "cifar-100-python"
        return nested if nested.is_dir() else self.root

    def _unpickle(self, name: str) -> dict[str, Any]:
        """A release file as a dict with ``str`` keys (the files were written by Python 2)."""
        path = self.data_dir / name
        if not path.is_file():
            raise layout_error(f"{self.NAME}: missing file {path}", self.root, self.LAYOUT)
        try:
            with open(path, "rb") as f:
                content = pickle.load(f, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as err:
            raise layout_error(
                f"{self.NAME}: {path} is not a CIFAR pickle ({err})", self.root, self.LAYOUT
            ) from err
        if not isinstance(content, dict):
            raise layout_error(f"{self.NAME}: {path} does not hold a dict", self.root, self.LAYOUT)
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}

    def _read_classes(self) -> list[str]:
        meta = self._unpickle("meta")
        if "fine_label_names" not in meta:
            path = self.data_dir / "meta"
            raise layout_error(f"{self.NAME}: {path} has no 'fine_label_names'", self.root, self.LAYOUT)
        return [str(name) for name in meta["fine_label_names"]]

    def _read_arrays(self, split: str) -> tuple[np.ndarray, list[int]]:
        """The split's images as ``(N, 32, 32, 3)`` uint8 and its fine labels."""
        path, entry = self.data_dir / _FILES[split], self._unpickle(_FILES[split])
        data, labels = np.asarray(entry.get("data")), entry.get("fine_labels")
        if (
            data.ndim != 2
            or data.shape[1] != 3 * 32 * 32
            or not len(data)
            or labels is None
            or len(labels) != len(data)
        ):
            problem = f"{self.NAME}: {path} must hold 'data' (N, 3072), N > 0, and N 'fine_labels'"
            raise layout_error(problem, self.root, self.LAYOUT)
        if max(labels, default=0) >= self.num_classes or min(labels, default=0) < 0:
            raise layout_error(
                f"{self.NAME}: {path} has labels outside 0..{self.num_classes - 1}", self.root, self.LAYOUT
            )
        # rows are the red, green and blue 32×32 planes one after the other
        images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(images), [int(y) for y in labels]

    def _make_dataset(self, split: Literal["train", "val"]) -> ArrayImageDataset:  # type: ignore[override]
        images, labels = self._read_arrays(split)
        transform = cifar_transforms(
            split == "train", self.image_size, self.resize, self.crop_padding, self.hflip, self.mean, self.std
        )
        return ArrayImageDataset(images, labels, transform)
