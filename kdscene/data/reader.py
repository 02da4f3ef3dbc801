"""The dataset reader contract, its shared base class, and the helpers every reader uses.

A reader is a plain class (no Lightning) that knows one dataset's on-disk layout: ``NAME``, ``LAYOUT``
(the expected layout, printed in every layout error), :meth:`Reader.classes` (label order),
:meth:`Reader.samples` (a split's ``(item, label)`` pairs) and :meth:`Reader.load` (one item as an RGB
image). A new dataset subclasses :class:`Reader` and writes ``LAYOUT``, :meth:`Reader.read_classes` and
:meth:`Reader.read_samples`; :class:`~kdscene.data.datamodule.SceneDataModule` turns any reader into
transforms and loaders.

Mean/std constants: the DCT paper's code (López-Cifuentes et al., ``trainCNNs.py``) normalises with
statistics its configs call "ImageNet", which are in fact the Kinetics statistics
(``KINETICS_MEAN``/``KINETICS_STD``); ``IMAGENET_MEAN``/``IMAGENET_STD`` are provided for
torchvision-pretrained teachers.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Literal, TypeVar

from PIL import Image, UnidentifiedImageError

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Split = Literal["train", "val"]
SPLITS: tuple[Split, ...] = ("train", "val")
Sample = tuple[Path, int]
ItemT = TypeVar("ItemT", bound=Hashable)
T = TypeVar("T")


class DatasetLayoutError(FileNotFoundError):
    """A dataset file or folder is missing or malformed; the message shows the expected layout."""


class CorruptImageError(OSError):
    """An image file exists but cannot be decoded."""


@dataclass(frozen=True)
class Samples(Generic[ItemT]):
    """One split as a reader lists it.

    Attributes:
        pairs: ``(item, label)`` pairs; an item is whatever the reader's ``load`` decodes (a file path,
            an array index).
        source: the file the pairs were read from, named in error messages.
    """

    pairs: list[tuple[ItemT, int]]
    source: str


def layout_error(problem: str, root: Path, layout: str) -> DatasetLayoutError:
    """An error that says what is wrong and how the dataset folder must look."""
    return DatasetLayoutError(f"{problem}\nExpected layout under {root}:\n{layout.rstrip()}")


def read_lines(path: Path, root: Path, layout: str) -> list[str]:
    """Non-empty lines of a list file without their line ending (inner spaces are kept)."""
    if not path.is_file():
        raise layout_error(f"missing list file {path}", root, layout)
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


def check_files(samples: Sequence[tuple[Hashable, int]], root: Path, layout: str, source: str) -> None:
    """Raise naming the first missing image (and how many are missing) of a split.

    Only items that are paths are checked; other items (array indices) have no file.
    """
    missing = [p for p, _ in samples if isinstance(p, Path) and not p.is_file()]
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


class Reader(Generic[ItemT]):
    """Base class of the dataset readers: the root folder, its check, cached classes, file loading.

    Subclasses set ``NAME`` and ``LAYOUT`` and implement :meth:`read_classes` and :meth:`read_samples`;
    readers whose items are not image files also override :meth:`load`.

    Args:
        root: the dataset folder (see the subclass's ``LAYOUT``).
    """

    NAME: ClassVar[str] = "dataset"
    LAYOUT: ClassVar[str] = ""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self._classes: list[str] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})"

    # ---- what a subclass provides -------------------------------------------------------------
    def read_classes(self) -> list[str]:  # pragma: no cover - interface
        """Class names in label order, read from disk (called once, after the root check)."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_classes()")

    def read_samples(self, split: Split) -> Samples[ItemT]:  # pragma: no cover - interface
        """The split's ``(item, label)`` pairs and the name of the file they came from."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_samples(split)")

    def prepare(self) -> None:
        """Create the dataset's files if the reader can (the synthetic scenes do); default: nothing."""

    # ---- shared behaviour ---------------------------------------------------------------------
    def error(self, problem: str) -> DatasetLayoutError:
        """A layout error about this dataset: ``problem`` followed by the expected layout."""
        return layout_error(problem, self.root, self.LAYOUT)

    def parse_list(self, path: Path, parse: Callable[[str], T]) -> list[T]:
        """Every non-empty line of a list file through ``parse``.

        Args:
            path: the list file (a missing file is a layout error).
            parse: turns one line into a value; its ``ValueError`` becomes a layout error naming the
                file and line number.

        Returns:
            The parsed lines, in file order.
        """
        parsed = []
        for number, line in enumerate(read_lines(path, self.root, self.LAYOUT), 1):
            try:
                parsed.append(parse(line))
            except ValueError as err:
                raise self.error(f"{path}, line {number}: {err}") from None
        return parsed

    def check_root(self) -> None:
        """Raise with the expected layout when the root folder does not exist."""
        if not self.root.is_dir():
            raise self.error(f"{self.NAME}: dataset folder {self.root} does not exist")

    def classes(self) -> list[str]:
        """Class names in label order; read from disk on first use, then cached.

        Returns:
            The names; label ``i`` is ``classes()[i]``.
        """
        if self._classes is None:
            self.check_root()
            self._classes = self.read_classes()
        return self._classes

    def class_index(self) -> dict[str, int]:
        """Class name → label."""
        return {c: i for i, c in enumerate(self.classes())}

    def samples(self, split: Split) -> Samples[ItemT]:
        """A split's ``(item, label)`` pairs (``"val"`` is the official test/val split).

        Args:
            split: ``"train"`` or ``"val"``.

        Returns:
            The pairs and their source file; raises :class:`DatasetLayoutError` when there are none.
        """
        if split not in SPLITS:
            raise ValueError(f"{self.NAME}: split must be 'train' or 'val', got {split!r}")
        found = self.read_samples(split)
        if not found.pairs:
            raise self.error(f"{self.NAME}: the {split} split read from {found.source} is empty")
        return found

    def load(self, item: ItemT, draft_size: int | None = None) -> Image.Image:
        """Decode one item as an RGB image; by default the item is an image file's path.

        Args:
            item: an item of :meth:`samples`.
            draft_size: smallest side the JPEG decoder must keep; ``None`` decodes fully.

        Returns:
            The RGB image; raises :class:`CorruptImageError` when the file cannot be decoded.
        """
        if not isinstance(item, (str, Path)):
            raise TypeError(
                f"{type(self).__name__}: the default load reads image files, got a {type(item).__name__} "
                "item; a reader of other items must override load()"
            )
        return load_rgb(Path(item), draft_size)
