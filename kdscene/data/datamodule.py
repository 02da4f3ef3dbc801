"""The one scene DataModule: any reader → checked datasets, transforms and loaders.

The reader (:mod:`kdscene.data.reader`) knows a dataset's layout; this module owns everything that is
the same for all datasets: transforms, loaders, the file checks and corrupt-image handling. Validation
and test use the reader's ``"val"`` split (the datasets' official test/val split), as in the papers;
the best checkpoint is chosen on it, so report it as the papers do.

Loading is independent of torch's global random generator (:mod:`kdscene.data.sampling`): the order of
epoch ``e`` and the view of sample ``i`` in it are pure functions of ``(sampling_seed, e, i)``, so a run
resumed from an epoch-end checkpoint sees the same batches as the uninterrupted run. The DataModule
shards across DDP ranks itself (training padded to equal shards, evaluation not padded, so every
validation/test sample counts exactly once): use it with ``Trainer(use_distributed_sampler=False)``
(``conf/trainer/default.yaml``); a distributed Trainer that would re-shard the loaders is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from kdscene.data.checks import DecodeCache, cache_dir, check_mode, find_undecodable
from kdscene.data.dataset import DropSkipped, ImageListDataset, build_transforms
from kdscene.data.reader import KINETICS_MEAN, KINETICS_STD, CorruptImageError, Reader, Split, check_files
from kdscene.data.sampling import EpochSampler

log = logging.getLogger(__name__)

TRAIN_CROPS = ("random", "random_resized", "center")
SHOWN = 5  # corrupt files named in a message


def build_reader(reader: Reader | Callable[[Path], Reader], root: str | Path | None) -> Reader:
    """A built reader as given, or a reader factory (class, ``functools.partial``) called with ``root``.

    Args:
        reader: a :class:`Reader`, or a callable that builds one from the root folder.
        root: the dataset folder for a factory; must be ``None`` with a built reader.

    Returns:
        The reader.
    """
    if isinstance(reader, Reader):
        if root is not None:
            raise ValueError(
                f"SceneDataModule: reader {reader!r} is already built with its root; got root={str(root)!r} "
                "as well. Pass root=None, or pass the reader class (or a partial of it) with root"
            )
        return reader
    if not callable(reader):
        raise TypeError(f"SceneDataModule: reader must be a Reader or a reader class/partial, got {reader!r}")
    if root is None:
        raise ValueError(
            f"SceneDataModule: reader {reader!r} is a factory, so root (the dataset folder) is required"
        )
    built = reader(Path(root))
    if not isinstance(built, Reader):
        raise TypeError(f"SceneDataModule: reader factory {reader!r} built {built!r}, not a Reader")
    return built


def uses_lightning_sharding(trainer: object) -> bool:
    """Whether ``trainer`` runs several processes and would put its own distributed sampler in the loaders."""
    connector = getattr(trainer, "_accelerator_connector", None)
    return (
        bool(getattr(connector, "use_distributed_sampler", False)) and getattr(trainer, "world_size", 1) > 1
    )


class SceneDataModule(L.LightningDataModule):
    """Loaders over a dataset reader; validation, test and predict use the reader's ``"val"`` split.

    Args:
        reader: a built :class:`~kdscene.data.reader.Reader` (then ``root`` is ``None``), or a reader
            class or ``functools.partial`` of one (Hydra's ``_partial_: true``) called with ``root``.
        root: the dataset folder, when ``reader`` is a factory.
        image_size: side of the square crop fed to the networks.
        resize: shorter side after the first resize (256 in the DCT paper); ``None`` resizes
            straight to ``image_size``.
        train_crop: ``"random"`` (resize, then random crop; the DCT paper), ``"random_resized"``
            (``RandomResizedCrop``, the ImageNet recipe) or ``"center"`` (no crop augmentation).
        crop_padding: zero padding of the random training crop (4 in RepDistiller's CIFAR recipe).
        hflip: random horizontal flip for training.
        mean, std: normalisation statistics (default: the DCT code's, i.e. Kinetics).
        batch_size: training batch size per process.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: loader worker processes (and threads of the decode check).
        pin_memory: pin host memory, so that batches reach a GPU asynchronously (ignored without CUDA).
        persistent_workers: keep the worker processes between epochs (with ``num_workers > 0``); their
            views do not depend on it (``sampling``).
        skip_corrupt: leave undecodable images out instead of raising: found by the decode check they
            are dropped from the split (one warning); met while loading, the sample is dropped from its
            batch (a warning per file), so a batch may be one short, or empty (then images
            ``(0, 3, s, s)`` and labels ``(0,)``: the step must skip it).
        check_files: before training, ``"exists"`` (or ``True``): every listed image exists (one
            ``stat`` each); ``"decode"``: every image of the splits decodes (in ``num_workers`` threads,
            remembered across runs, see :mod:`kdscene.data.checks`); ``False``: no check.
        draft: decode JPEGs at reduced scale when they are much larger than ``resize``.
        sampling_seed: seeds each epoch's order and each sample's augmentation (the run's seed).
        return_index: training batches are ``(images, labels, indices)`` with each sample's int64
            position in the training split (for memory banks, teacher caches); evaluation batches stay
            ``(images, labels)``.
        view_cycle: training views cycle through this many draws (epoch ``e`` uses the view of epoch
            ``e mod view_cycle``; the order stays epoch ``e``'s), as a teacher cache with that many
            views recorded them; ``None`` (default): every epoch draws its own views.
    """

    def __init__(
        self,
        reader: Reader | Callable[[Path], Reader],
        root: str | Path | None = None,
        image_size: int = 224,
        resize: int | None = 256,
        train_crop: Literal["random", "random_resized", "center"] = "random",
        crop_padding: int = 0,
        hflip: bool = True,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = False,
        skip_corrupt: bool = False,
        check_files: bool | Literal["exists", "decode"] = "exists",
        draft: bool = True,
        sampling_seed: int = 0,
        return_index: bool = False,
        persistent_workers: bool = True,
        view_cycle: int | None = None,
    ) -> None:
        super().__init__()
        if train_crop not in TRAIN_CROPS:
            raise ValueError(f"train_crop must be 'random', 'random_resized' or 'center', got {train_crop!r}")
        self.reader = build_reader(reader, root)
        self.image_size, self.resize, self.train_crop = image_size, resize, train_crop
        self.crop_padding, self.hflip = crop_padding, hflip
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.skip_corrupt, self.check_files, self.draft = skip_corrupt, check_mode(check_files), draft
        self.sampling_seed, self.return_index = int(sampling_seed), return_index
        self.persistent_workers, self.view_cycle = persistent_workers, view_cycle
        self.datasets: dict[str, ImageListDataset] = {}
        self.corrupt: dict[str, list[Hashable]] = {}  # what the decode check left out, by split

    @property
    def classes(self) -> list[str]:
        """Class names in label order; read from disk on first use (no ``setup`` needed)."""
        return self.reader.classes()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def draft_size(self) -> int | None:
        """The smallest side JPEG drafts keep, or ``None`` (full decoding)."""
        return (self.resize or self.image_size) if self.draft else None

    def prepare_data(self) -> None:
        """Let the reader create its files; with ``check_files="decode"``, decode the images once.

        Lightning calls this once per node before ``setup`` on every rank, so the ranks' checks then
        find every image in the decode cache. Outside fitting only the ``"val"`` split is decoded.
        """
        self.reader.prepare()
        if self.check_files == "decode":
            fitting = getattr(getattr(self.trainer, "state", None), "fn", "fit") == "fit"
            for split in ("train", "val") if fitting else ("val",):
                self._undecodable(self.reader.samples(split).pairs)

    def _undecodable(self, pairs: Sequence[tuple[Hashable, int]]) -> list[Hashable]:
        cache = DecodeCache(cache_dir() / "decoded.sqlite")
        items = [item for item, _ in pairs]
        return find_undecodable(self.reader, items, self.draft_size, self.num_workers, cache)

    def _checked_pairs(self, split: Split) -> list[tuple[Hashable, int]]:
        """The split's pairs after ``check_files``: raises on missing or (unless skipped) corrupt images."""
        found = self.reader.samples(split)
        if self.check_files is not None:
            check_files(found.pairs, self.reader.root, self.reader.LAYOUT, found.source)
        if self.check_files != "decode":
            return found.pairs
        bad = self._undecodable(found.pairs)
        if not bad:
            return found.pairs
        named = ", ".join(str(item) for item in bad[:SHOWN]) + (", ..." if len(bad) > SHOWN else "")
        if not self.skip_corrupt:
            raise CorruptImageError(
                f"{self.reader.NAME}: {len(bad)} image(s) listed in {found.source} cannot be decoded: "
                f"{named}. Replace or remove them, or set skip_corrupt=true (data.skip_corrupt=true) to "
                "leave them out"
            )
        log.warning(
            "%s: leaving out %d corrupt image(s) of %s: %s", self.reader.NAME, len(bad), found.source, named
        )
        self.corrupt[split] = bad
        dropped = set(bad)
        return [(item, label) for item, label in found.pairs if item not in dropped]

    def _make_dataset(self, split: Split) -> ImageListDataset:
        transform = build_transforms(
            split == "train",
            self.image_size,
            self.resize,
            self.train_crop,
            self.hflip,
            self.mean,
            self.std,
            self.crop_padding,
        )
        return ImageListDataset(
            self.reader,
            self._checked_pairs(split),
            transform,
            self.skip_corrupt,
            self.draft_size,
            self.sampling_seed,
            return_index=self.return_index and split == "train",
        )

    def setup(self, stage: str | None = None) -> None:
        if not self.reader.root.exists():  # outside a Trainer, which would have called prepare_data
            self.prepare_data()
        self.reader.check_root()
        if stage in (None, "fit") and "train" not in self.datasets:
            self.datasets["train"] = self._make_dataset("train")
        if "val" not in self.datasets:
            self.datasets["val"] = self._make_dataset("val")
        log.info(
            "%s: %d classes, %s",
            self.reader.NAME,
            self.num_classes,
            ", ".join(f"{k} {len(v)} images" for k, v in self.datasets.items()),
        )

    def _loader(self, split: str, train: bool) -> DataLoader:
        if uses_lightning_sharding(self.trainer):
            raise ValueError(
                "SceneDataModule shards its loaders across ranks itself (training padded, evaluation not); "
                "create the Trainer with use_distributed_sampler=False (conf/trainer/default.yaml sets it)"
            )
        if split not in self.datasets:
            self.setup("fit" if train else "test")
        dataset = self.datasets[split]
        dataset.return_index = self.return_index and train  # may be switched on after setup
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=self._sampler(len(dataset), train),
            drop_last=False,
            num_workers=self.num_workers,
            collate_fn=DropSkipped((3, self.image_size, self.image_size), dataset.return_index),
            pin_memory=self.pin_memory and torch.cuda.is_available(),  # nothing to pin for without CUDA
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.sampling_seed),
        )

    def _sampler(self, size: int, train: bool) -> EpochSampler:
        """Training: shuffled, padded, views cycled (``view_cycle``); evaluation: in order, unpadded."""
        cycle = self.view_cycle if train else None
        return EpochSampler(size, shuffle=train, seed=self.sampling_seed, pad=train, view_cycle=cycle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)
