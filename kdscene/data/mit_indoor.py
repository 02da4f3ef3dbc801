"""MIT Indoor 67 (Quattoni & Torralba, "Recognizing Indoor Scenes", CVPR 2009), official layout.

67 classes, 15,620 images; the official split lists 5,360 training and 1,340 test images (77–83 and
17–23 per class, not exactly 80/20). Six file names contain spaces (``mall/shopping mall.jpg``), so
list lines are split at the first ``/`` only, never on whitespace. Class indices follow the sorted
class names, as ``ImageFolder`` and the DCT authors' ``scene_names.txt`` do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from kdscene.data.base import SceneDataModule, layout_error, read_lines

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


class MITIndoor67DataModule(SceneDataModule):
    """MIT Indoor 67 from ``root`` (see ``LAYOUT``); validation/test = the official test list.

    Args: see :class:`~kdscene.data.base.SceneDataModule`.
    """

    LAYOUT = MIT_LAYOUT
    NAME = "MIT Indoor 67"

    def _list_entries(self, split: str) -> list[tuple[str, str]]:
        path = self.root / _LISTS[split]
        entries = []
        for number, line in enumerate(read_lines(path, self.root, self.LAYOUT), 1):
            try:
                entries.append(parse_mit_line(line))
            except ValueError as err:
                raise layout_error(f"{path}, line {number}: {err}", self.root, self.LAYOUT) from None
        return entries

    def _read_classes(self) -> list[str]:
        if not (self.root / "Images").is_dir():
            raise layout_error(f"{self.NAME}: missing folder {self.root / 'Images'}", self.root, self.LAYOUT)
        names = {cls for split in _LISTS for cls, _ in self._list_entries(split)}
        return sorted(names)

    def _read_split(self, split: Literal["train", "val"]) -> tuple[list[tuple[Path, int]], str]:
        index = self.class_index()
        images = self.root / "Images"
        samples = [(images / rel, index[cls]) for cls, rel in self._list_entries(split)]
        return samples, str(self.root / _LISTS[split])
