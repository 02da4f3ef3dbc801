"""The scene DataModule base: transforms, loaders and checked image lists shared by every dataset.

A dataset reader subclasses :class:`SceneDataModule` and implements three things: ``LAYOUT`` (the
expected on-disk layout, printed in every error about a missing file), :meth:`_read_classes` and
:meth:`_read_split`. Everything else (transforms, loaders, the file checks, corrupt-image handling)
lives here, so that all datasets behave the same.

Default transforms follow the DCT paper's code (López-Cifuentes et al., ``trainCNNs.py``): training
``Resize(256)`` on the shorter side → ``RandomCrop(224)`` → horizontal flip; evaluation ``Resize(256)``
→ ``CenterCrop(224)``; normalised with the mean/std the authors' configs call "ImageNet", which are in
fact the Kinetics statistics (``KINETICS_MEAN``/``KINETICS_STD``). ``IMAGENET_MEAN``/``IMAGENET_STD``
are provided for torchvision-pretrained teachers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import lightning as L
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

log = logging.getLogger(__name__)

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Sample = tuple[Path, int]


class DatasetLayoutError(FileNotFoundError):
    """A dataset file or folder is missing or malformed; the message shows the expected layout."""


class CorruptImageError(OSError):
    """An image file exists but cannot be decoded."""


def layout_error(problem: str, root: Path, layout: str) -> DatasetLayoutError:
    """An error that says what is wrong and how the dataset folder must look."""
    return DatasetLayoutError(f"{problem}\nExpected layout under {root}:\n{layout.rstrip()}")


def read_lines(path: Path, root: Path, layout: str) -> list[str]:
    """Non-empty lines of a list file without their line ending (inner spaces are kept)."""
    if not path.is_file():
        raise layout_error(f"missing list file {path}", root, layout)
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


def check_files(samples: Sequence[Sample], root: Path, layout: str, source: str) -> None:
    """Raise naming the first missing image (and how many are missing) of a split."""
    missing = [p for p, _ in samples if not p.is_file()]
    if missing:
        raise layout_error(
            f"{len(missing)} image(s) listed in {source} do not exist, the first is {missing[0]}",
            root,
            layout,
        )


def load_rgb(path: Path, draft_size: int | None = None) -> Image.Image:
    """Decode an image as RGB; JPEGs are decoded at reduced scale when ``draft_size`` allows it."""
    try:
        img = Image.open(path)
        if draft_size is not None and img.format == "JPEG":
            # DCT-domain downscaling: at most 2x larger than needed, several times faster to decode
            img.draft("RGB", (draft_size, draft_size))
        return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"cannot decode image {path}: {err}") from err


class ImageListDataset(Dataset):
    """(image, label) pairs from a list of files.

    Args:
        samples: (path, class index) pairs.
        transform: applied to the decoded RGB PIL image.
        skip_corrupt: when an image cannot be decoded, log a warning naming it, count it in
            ``skipped`` and return the next readable sample instead of raising.
        draft_size: smallest side the decoder must keep (JPEG draft mode); ``None`` decodes fully.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: T.Compose | None = None,
        skip_corrupt: bool = False,
        draft_size: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.draft_size = draft_size
        self.skipped: set[Path] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                img = load_rgb(path, self.draft_size)
            except CorruptImageError as err:
                if not self.skip_corrupt:
                    raise
                if path not in self.skipped:
                    self.skipped.add(path)
                    log.warning("skipping corrupt image (%d in this process): %s", len(self.skipped), err)
                continue
            return (self.transform(img) if self.transform else img), label
        raise CorruptImageError(f"every image of this split is corrupt ({len(self.samples)} files)")

    def find_corrupt(self) -> list[Path]:
        """Decode every image once and return the paths that fail (slow: a full pass over the data)."""
        bad = []
        for path, _ in self.samples:
            try:
                load_rgb(path, self.draft_size).load()
            except CorruptImageError:
                bad.append(path)
        return bad


def build_transforms(
    train: bool,
    image_size: int,
    resize: int | None,
    train_crop: str,
    hflip: bool,
    mean: Sequence[float],
    std: Sequence[float],
    crop_padding: int = 0,
) -> T.Compose:
    """The training or evaluation pipeline (PIL image → normalised float tensor)."""
    steps: list = []
    if train and train_crop == "random_resized":
        steps.append(T.RandomResizedCrop(image_size))
    else:
        steps.append(T.Resize(resize or image_size))
        if train and train_crop == "random":
            steps.append(T.RandomCrop(image_size, padding=crop_padding or None))
        else:
            steps.append(T.CenterCrop(image_size))
    if train and hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


class SceneDataModule(L.LightningDataModule):
    """Base DataModule for image-folder scene datasets; subclasses read one dataset's layout.

    Validation and test use the same split (the datasets' official test/val split), as in the
    papers; the best checkpoint is chosen on it, so report it as the papers do.

    Args:
        root: dataset folder (see each subclass's ``LAYOUT``).
        image_size: side of the square crop fed to the networks.
        resize: shorter side after the first resize (256 in the DCT paper); ``None`` resizes
            straight to ``image_size``.
        train_crop: ``"random"`` (resize, then random crop; the DCT paper), ``"random_resized"``
            (``RandomResizedCrop``, the ImageNet recipe) or ``"center"`` (no crop augmentation).
        hflip: random horizontal flip for training.
        mean, std: normalisation statistics (default: the DCT code's, i.e. Kinetics).
        batch_size: training batch size per process.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: loader worker processes.
        pin_memory: pin host memory (useful with GPUs).
        skip_corrupt: skip undecodable images (warning + count) instead of raising.
        check_files: check at set-up that every listed image exists (one ``stat`` per image).
        draft: decode JPEGs at reduced scale when they are much larger than ``resize``.
    """

    LAYOUT: ClassVar[str] = ""
    NAME: ClassVar[str] = "dataset"

    def __init__(
        self,
        root: str | Path,
        image_size: int = 224,
        resize: int | None = 256,
        train_crop: Literal["random", "random_resized", "center"] = "random",
        hflip: bool = True,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = False,
        skip_corrupt: bool = False,
        check_files: bool = True,
        draft: bool = True,
    ) -> None:
        super().__init__()
        if train_crop not in ("random", "random_resized", "center"):
            raise ValueError(f"train_crop must be 'random', 'random_resized' or 'center', got {train_crop!r}")
        self.root = Path(root).expanduser()
        self.image_size, self.resize, self.train_crop, self.hflip = image_size, resize, train_crop, hflip
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.skip_corrupt, self.check_files, self.draft = skip_corrupt, check_files, draft
        self._classes: list[str] | None = None
        self.datasets: dict[str, ImageListDataset] = {}

    # ---- what a subclass provides -------------------------------------------------------------
    def _read_classes(self) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def _read_split(self, split: Literal["train", "val"]) -> tuple[list[Sample], str]:  # pragma: no cover
        """The split's (path, label) pairs and the name of the file they came from."""
        raise NotImplementedError

    # ---- shared behaviour ---------------------------------------------------------------------
    def check_root(self) -> None:
        """Raise with the expected layout when the root folder does not exist."""
        if not self.root.is_dir():
            problem = f"{self.NAME}: dataset folder {self.root} does not exist"
            raise layout_error(problem, self.root, self.LAYOUT)

    @property
    def classes(self) -> list[str]:
        """Class names in label order; read from disk on first use (no ``setup`` needed)."""
        if self._classes is None:
            self.check_root()
            self._classes = self._read_classes()
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def _make_dataset(self, split: Literal["train", "val"]) -> ImageListDataset:
        samples, source = self._read_split(split)
        if not samples:
            problem = f"{self.NAME}: the {split} split read from {source} is empty"
            raise layout_error(problem, self.root, self.LAYOUT)
        if self.check_files:
            check_files(samples, self.root, self.LAYOUT, source)
        train = split == "train"
        transform = build_transforms(
            train, self.image_size, self.resize, self.train_crop, self.hflip, self.mean, self.std
        )
        draft = (self.resize or self.image_size) if self.draft else None
        return ImageListDataset(samples, transform, self.skip_corrupt, draft)

    def setup(self, stage: str | None = None) -> None:
        self.check_root()
        if stage in (None, "fit") and "train" not in self.datasets:
            self.datasets["train"] = self._make_dataset("train")
        if "val" not in self.datasets:
            self.datasets["val"] = self._make_dataset("val")
        log.info(
            "%s: %d classes, %s",
            self.NAME,
            self.num_classes,
            ", ".join(f"{k} {len(v)} images" for k, v in self.datasets.items()),
        )

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup("fit" if train else "test")
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)
