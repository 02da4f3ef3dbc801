"""SUN397 (Xiao et al., "SUN Database: Large-scale Scene Recognition from Abbey to Zoo", CVPR 2010).

397 classes, 108,754 images in ``SUN397/<letter>/<class>[/<sub>]/sun_*.jpg``. The benchmark uses
ten official partitions (``Partitions/Training_NN.txt`` / ``Testing_NN.txt``, 50 training and 50 test
images per class each, 19,850 lines per file); ``partition`` picks one (default 1, as is usual for a
single-split report). ``torchvision.datasets.SUN397`` has no split, so kdscene applies the partition
files itself. Class ``i`` is line ``i`` of ``ClassName.txt``; class names drop the ``/<letter>/``
prefix as torchvision does (``/g/gazebo/exterior`` → ``gazebo/exterior``).

``root`` is the folder holding ``SUN397/`` and ``Partitions/`` (the two official archives unpacked
side by side); the ``SUN397`` folder itself is accepted too, with ``Partitions/`` inside it or next to
it. ``ClassName.txt`` is read from ``SUN397/`` (it ships there), else from ``Partitions/``.

Note: the DCT/VPU re-packaged SUN397 lists the same file names in its ``train.txt`` and ``val.txt``;
use the official partitions and do not compare with that table until it is resolved.
"""

from __future__ import annotations

from pathlib import Path

from kdscene.data.reader import Reader, Sample, Samples, Split, read_lines

SUN397_LAYOUT = """\
  (root holds SUN397/ and Partitions/; root may also be SUN397/ itself)
  SUN397/ClassName.txt                       lines "/a/abbey", 397 lines
  SUN397/<letter>/<class>[/<sub>]/sun_*.jpg  e.g. SUN397/g/gazebo/exterior/sun_aabhnbuvdkbbcmts.jpg
  Partitions/Training_01.txt ... _10.txt     lines "/a/abbey/sun_aqswjsnjlrfzzhiz.jpg", 19,850 lines
  Partitions/Testing_01.txt ... _10.txt      same format"""

_LIST_PREFIX = {"train": "Training", "val": "Testing"}


class SUN397(Reader[Path]):
    """SUN397 with one official partition (see ``LAYOUT``); ``"val"`` is its Testing list.

    Args:
        root: see the module docstring.
        partition: which official partition (1..10) gives the training and testing lists.
    """

    LAYOUT = SUN397_LAYOUT
    NAME = "SUN397"

    def __init__(self, root: str | Path, partition: int = 1) -> None:
        super().__init__(root)
        if isinstance(partition, bool) or not isinstance(partition, int) or not 1 <= partition <= 10:
            raise ValueError(f"SUN397 partition must be an integer from 1 to 10, got {partition!r}")
        self.partition = partition

    @property
    def image_dir(self) -> Path:
        """The ``SUN397`` folder: ``root/SUN397`` when it exists, else ``root``."""
        nested = self.root / "SUN397"
        return nested if nested.is_dir() else self.root

    @property
    def partition_dir(self) -> Path:
        """``Partitions`` next to the ``SUN397`` folder, or inside it."""
        for folder in (self.image_dir.parent, self.image_dir):
            if (folder / "Partitions").is_dir():
                return folder / "Partitions"
        places = f"{self.image_dir.parent / 'Partitions'} or {self.image_dir / 'Partitions'}"
        raise self.error(f"{self.NAME}: missing folder {places}")

    def _category_names(self) -> list[str]:
        """``ClassName.txt`` lines (``/a/abbey``) in label order."""
        path = self.image_dir / "ClassName.txt"
        if not path.is_file():
            copies = [f / "Partitions" / "ClassName.txt" for f in (self.image_dir.parent, self.image_dir)]
            path = next((p for p in copies if p.is_file()), path)
        names = [line.strip() for line in read_lines(path, self.root, self.LAYOUT)]
        bad = [n for n in names if not (n.startswith("/") and n[2:3] == "/" and len(n) > 3)]
        if bad:
            raise self.error(f"{path}: expected lines like '/a/abbey', got {bad[0]!r}")
        return names

    def read_classes(self) -> list[str]:
        return [name[3:] for name in self._category_names()]

    def read_samples(self, split: Split) -> Samples[Path]:
        index = {name: i for i, name in enumerate(self._category_names())}
        path = self.partition_dir / f"{_LIST_PREFIX[split]}_{self.partition:02d}.txt"

        def parse(line: str) -> Sample:
            rel = line.strip()
            category = rel.rsplit("/", 1)[0]
            if category not in index:
                raise ValueError(f"{rel!r} is not in a class of ClassName.txt")
            return self.image_dir / rel.lstrip("/"), index[category]

        return Samples(self.parse_list(path, parse), str(path))
