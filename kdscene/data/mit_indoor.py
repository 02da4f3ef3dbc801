"""MIT Indoor 67 (Quattoni & Torralba, "Recognizing Indoor Scenes", CVPR 2009), official layout.

67 classes, 15,620 images; the official split lists 5,360 training and 1,340 test images (77–83 and
17–23 per class, not exactly 80/20). Six file names contain spaces (``mall/shopping mall.jpg``), so
list lines are split at the first ``/`` only, never on whitespace. Class indices follow the sorted
class names, as ``ImageFolder`` and the DCT authors' ``scene_names.txt`` do.
"""

from __future__ import annotations

from pathlib import Path

from kdscene.data.reader import Reader, Samples, Split

MIT_LAYOUT = """\
  Images/<class>/<file>.jpg          67 class folders (indoorCVPR_09.tar)
  TrainImages.txt                    lines "<class>/<file>.jpg", 5,360 lines
  TestImages.txt                     lines "<class>/<file>.jpg", 1,340 lines"""

_LISTS = {"train": "TrainImages.txt", "val": "TestImages.txt"}


def parse_mit_line(line: str) -> tuple[str, str]:
    """``"mall/shopping mall.jpg"`` → (``"mall"``, ``"mall/shopping mall.jpg"``)."""
    line = line.strip("\r\n").lstrip("/")
    if "/" not in line:
        raise ValueError(f"expected '<class>/<file>', got {line!r}")
    cls, _ = line.split("/", 1)
    return cls, line


class MITIndoor67(Reader[Path]):
    """MIT Indoor 67 from ``root`` (see ``LAYOUT``); ``"val"`` is the official test list.

    Args:
        root: the folder holding ``Images/``, ``TrainImages.txt`` and ``TestImages.txt``.
    """

    LAYOUT = MIT_LAYOUT
    NAME = "MIT Indoor 67"

    def _list_entries(self, split: str) -> list[tuple[str, str]]:
        return self.parse_list(self.root / _LISTS[split], parse_mit_line)

    def read_classes(self) -> list[str]:
        if not (self.root / "Images").is_dir():
            raise self.error(f"{self.NAME}: missing folder {self.root / 'Images'}")
        names = {cls for split in _LISTS for cls, _ in self._list_entries(split)}
        return sorted(names)

    def read_samples(self, split: Split) -> Samples[Path]:
        index = self.class_index()
        images = self.root / "Images"
        pairs = [(images / rel, index[cls]) for cls, rel in self._list_entries(split)]
        return Samples(pairs, str(self.root / _LISTS[split]))
