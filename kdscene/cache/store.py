"""The teacher cache on disk: memory-mapped numpy arrays and a JSON header, in one folder.

Layout of a cache folder::

    header.json        what the rows were recorded from (kdscene.cache.header), the taps, shapes, dtype
    logits.npy         (K, N, num_classes)  the teacher's logits for view (k, i)
    energy_<l>.npy     (K, N, H_l, W_l)     its channel energy A_l = (1/C_l)·Σ_c F_c² at tap l
    view_seed.npy      (K, N) int64         the seed view (k, i) was drawn with

Row ``(k, i)`` is training image ``i`` under draw ``k``: the training transform run under
``view_seed(sampling_seed, k, i)`` (:mod:`kdscene.data.sampling`). The crop box and the flip are implied
by that seed and the transform settings in the header, so no image, crop box or flip is stored: seed,
draw and index make the view replayable (the seed is kept per row so that a reader can check it).
What is stored of the teacher is what the losses read: logits (KD, DKD, DCT's guidance) and the
per-tap channel energy (AT with p = 2, DCT), not the feature maps, in float16 by default: for a
ResNet-50 at 224 px 56² + 28² + 14² + 7² = 4,165 energy values, 8.3 KB per view, plus 2 bytes per class.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kdscene.cache.header import FORMAT, VERSION, CacheMismatchError, check_header
from kdscene.features import Features, TapInfo

HEADER_FILE = "header.json"
DTYPES = ("float16", "float32")


def tap_infos(header: Mapping[str, Any]) -> list[TapInfo]:
    """The taps recorded in a header, as :class:`~kdscene.features.TapInfo`."""
    return [TapInfo(t["name"], t["channels"], t["stride"], tuple(t["size"])) for t in header["taps"]]


class TeacherCache:
    """A recorded teacher cache, read-only; its arrays are memory-mapped on first use.

    Args:
        path: the cache folder written by :func:`kdscene.cache.record_cache` (``kdscene-cache``).

    Raises:
        FileNotFoundError: ``path`` holds no ``header.json``.
        CacheMismatchError: the folder is not a kdscene teacher cache of this version.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        header_file = self.path / HEADER_FILE
        if not header_file.is_file():
            raise FileNotFoundError(
                f"teacher cache {str(self.path)!r} has no {HEADER_FILE}: record one with kdscene-cache "
                "(or a recording was interrupted: record it again)"
            )
        self.header_text = header_file.read_text()
        self.header: dict[str, Any] = json.loads(self.header_text)
        if self.header.get("format") != FORMAT or self.header.get("version") != VERSION:
            raise CacheMismatchError(
                f"{str(self.path)!r} is not a {FORMAT} of version {VERSION} (header says "
                f"{self.header.get('format')!r} version {self.header.get('version')!r})"
            )
        self._arrays: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (ddp_spawn) without the memory maps; each process maps the files itself."""
        return {**self.__dict__, "_arrays": None}

    @property
    def views(self) -> int:
        """K, the number of augmentation draws recorded per image."""
        return int(self.header["views"])

    @property
    def num_images(self) -> int:
        """N, the number of training images."""
        return int(self.header["data"]["num_images"])

    @property
    def taps(self) -> list[TapInfo]:
        """The teacher's taps at the recorded image size (what losses are built with)."""
        return tap_infos(self.header)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """``logits``, ``energy_<l>`` and ``view_seed``, memory-mapped read-only."""
        if self._arrays is None:
            names = ["logits", "view_seed", *(f"energy_{i}" for i in range(len(self.header["taps"])))]
            self._arrays = {n: np.load(self.path / f"{n}.npy", mmap_mode="r") for n in names}
        return self._arrays

    def check(self, expected: Mapping[str, Any]) -> None:
        """Raise :class:`CacheMismatchError` naming every way ``expected`` differs from the header."""
        check_header(self.header, expected, self.path)

    def _rows(self, draw: int, indices: Tensor) -> np.ndarray:
        if not 0 <= draw < self.views:
            raise IndexError(f"teacher cache {str(self.path)!r}: draw {draw} outside 0..{self.views - 1}")
        rows = indices.detach().cpu().numpy().astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_images):
            raise IndexError(
                f"teacher cache {str(self.path)!r} holds {self.num_images} images; batch indices "
                f"{rows.min()}..{rows.max()} are outside it (another data set?)"
            )
        return rows

    def features(self, draw: int, indices: Tensor, device: torch.device | str | None = None) -> Features:
        """The teacher's ``Features`` of views ``(draw, indices)``: logits and energy maps, float32.

        Args:
            draw: which of the K recorded draws (an epoch ``e`` replays draw ``e mod K``).
            indices: (B,) positions of the batch's images in the training split.
            device: where the tensors go (default: CPU).

        Returns:
            ``Features(logits=(B, classes), energy=((B, H_l, W_l), ...), names=tap names)``.
        """
        rows = self._rows(draw, indices)

        def take(name: str) -> Tensor:
            block = np.ascontiguousarray(self.arrays[name][draw, rows])  # reads only these rows
            return torch.from_numpy(block).to(device or "cpu").float()

        energy = tuple(take(f"energy_{i}") for i in range(len(self.header["taps"])))
        names = tuple(t["name"] for t in self.header["taps"])
        return Features(logits=take("logits"), energy=energy, names=names)

    def bytes_per_view(self) -> int:
        """Bytes one view takes on disk: logits, energy maps and its seed."""
        return sum(a[0, 0].nbytes for a in self.arrays.values())


class CacheWriter:
    """Writes a cache into ``<path>.partial`` and renames it to ``path`` once every row is written.

    Args:
        path: the cache folder to create (must not exist).
        header: the recording's description (data, transform, seed, teacher, taps, views ...).
        taps: the teacher's taps at the recorded image size.
        dtype: ``"float16"`` (default in kdscene-cache) or ``"float32"`` for logits and energy.
    """

    def __init__(
        self, path: str | Path, header: Mapping[str, Any], taps: Sequence[TapInfo], dtype: str
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"teacher cache dtype must be one of {DTYPES}, got {dtype!r}")
        self.path = Path(path).expanduser()
        if self.path.exists():
            raise FileExistsError(f"{str(self.path)!r} exists: remove it or record into another cache.path")
        self.partial = self.path.with_name(self.path.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)  # an interrupted earlier recording
        self.partial.mkdir(parents=True)
        self.header, self.dtype = dict(header), np.dtype(dtype)
        k, n = int(header["views"]), int(header["data"]["num_images"])
        shapes = {"logits": (k, n, int(header["num_classes"])), "view_seed": (k, n)}
        shapes.update({f"energy_{i}": (k, n, *tap.size) for i, tap in enumerate(taps)})
        self.arrays = {
            name: np.lib.format.open_memmap(
                self.partial / f"{name}.npy", "w+", np.int64 if name == "view_seed" else self.dtype, shape
            )
            for name, shape in shapes.items()
        }
        self.written = np.zeros((k, n), dtype=bool)
        self.names = [tap.name for tap in taps]

    def write(
        self, draw: int, indices: Tensor, seeds: Tensor, logits: Tensor, energy: Sequence[Tensor]
    ) -> None:
        """Store the rows ``(draw, indices)``; raise if a value does not fit the cache's dtype."""
        rows = indices.cpu().numpy()
        self._put("logits", draw, rows, logits, "logits")
        for i, (name, values) in enumerate(zip(self.names, energy)):
            self._put(f"energy_{i}", draw, rows, values, f"the channel energy of tap {name!r}")
        self.arrays["view_seed"][draw, rows] = seeds.cpu().numpy()
        self.written[draw, rows] = True

    def _put(self, name: str, draw: int, rows: np.ndarray, values: Tensor, what: str) -> None:
        with np.errstate(over="ignore"):  # an overflow is reported below, naming the tap
            block = values.detach().float().cpu().numpy().astype(self.dtype)
        if not np.isfinite(block).all():
            raise OverflowError(
                f"teacher cache: {what} is not finite in {self.dtype} (largest magnitude "
                f"{values.abs().max().item():.4g}); record with cache.dtype=float32"
            )
        self.arrays[name][draw, rows] = block

    def finish(self) -> TeacherCache:
        """Check every row was written, write the header, and move the folder into place."""
        missing = int((~self.written).sum())
        if missing:
            raise RuntimeError(
                f"teacher cache: {missing} of {self.written.size} views were not recorded (images dropped "
                "while loading? run the decode check, data.check_files=decode, before recording)"
            )
        for array in self.arrays.values():
            array.flush()
        (self.partial / HEADER_FILE).write_text(json.dumps(self.header, indent=1))
        os.replace(self.partial, self.path)
        return TeacherCache(self.path)
