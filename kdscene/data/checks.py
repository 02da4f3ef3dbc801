"""Checking a split's images before training: every file exists, or every image decodes.

``check_files`` (a :class:`~kdscene.data.datamodule.SceneDataModule` option) is ``"exists"`` (one
``stat`` per image; ``True`` is its alias), ``"decode"`` (decode every image once, in a thread pool) or
``False`` (no check). Decoding a large data set takes a while, so the files that were decoded are
remembered in a small SQLite file, keyed by path, size and modification time: a later run decodes only
new or changed files. The file is ``$KDSCENE_CACHE/decoded.sqlite`` (default
``~/.cache/kdscene/decoded.sqlite``), never inside the data set; when it cannot be used, every image is
decoded and a warning says why.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from kdscene.data.reader import CorruptImageError, Reader

log = logging.getLogger(__name__)

CheckMode = Literal["exists", "decode"]
Stamp = tuple[int, int]
"""A file's ``(size, mtime_ns)``."""


def check_mode(value: bool | str | None) -> CheckMode | None:
    """The check a ``check_files`` value asks for: ``"exists"``, ``"decode"`` or ``None`` (none).

    Args:
        value: ``"exists"`` (or ``True``), ``"decode"``, or ``False``/``None``.

    Returns:
        The normalised mode.
    """
    if value is True or value == "exists":
        return "exists"
    if value == "decode":
        return "decode"
    if value is False or value is None:
        return None
    raise ValueError(
        f"SceneDataModule: check_files must be 'exists' (or true), 'decode' or false, got {value!r}"
    )


def cache_dir() -> Path:
    """``$KDSCENE_CACHE``, else ``~/.cache/kdscene``."""
    return Path(os.environ.get("KDSCENE_CACHE") or "~/.cache/kdscene").expanduser()


class DecodeCache:
    """The files decoded before and whether they decoded: ``path -> (size, mtime_ns, ok)`` in SQLite.

    Args:
        path: the SQLite file (created with its folder on first store).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, tuple[int, int, bool]]:
        """Every remembered file; empty (with a warning) when the file cannot be read."""
        if not self.path.is_file():
            return {}
        try:
            with sqlite3.connect(self.path, timeout=60) as db:
                rows = db.execute("SELECT path, size, mtime_ns, ok FROM decoded").fetchall()
        except sqlite3.Error as err:
            log.warning("decode check: cannot read %s (%s); decoding every image", self.path, err)
            return {}
        return {path: (size, mtime, bool(ok)) for path, size, mtime, ok in rows}

    def store(self, rows: Iterable[tuple[str, int, int, bool]]) -> None:
        """Remember ``(path, size, mtime_ns, ok)`` rows (replacing older ones of the same paths)."""
        rows = [(p, s, m, int(ok)) for p, s, m, ok in rows]
        if not rows:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(self.path, timeout=60) as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS decoded "
                    "(path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ok INTEGER)"
                )
                db.executemany("INSERT OR REPLACE INTO decoded VALUES (?, ?, ?, ?)", rows)
        except (sqlite3.Error, OSError) as err:
            log.warning("decode check: cannot write %s (%s); the next run decodes again", self.path, err)


def _decodes(reader: Reader, path: Path, draft_size: int | None) -> bool:
    try:
        reader.load(path, draft_size).load()
    except CorruptImageError:
        return False
    return True


def find_undecodable(
    reader: Reader,
    items: Sequence[Hashable],
    draft_size: int | None = None,
    workers: int = 1,
    cache: DecodeCache | None = None,
) -> list[Hashable]:
    """Decode every image file among ``items`` that the cache does not know; return those that fail.

    Items that are not paths (CIFAR-100's array rows) have no file and are not checked. A file counts as
    known when the cache holds its path with the same size and modification time.

    Args:
        reader: decodes the items as training will (its ``load``).
        items: the split's items.
        draft_size: the JPEG draft size training uses.
        workers: threads decoding at once.
        cache: where decoded files are remembered; ``None`` decodes everything and remembers nothing.

    Returns:
        The items that cannot be decoded (or whose file vanished), in ``items`` order.
    """
    paths = [item for item in items if isinstance(item, Path)]
    known = cache.load() if cache is not None else {}

    def check(path: Path) -> tuple[Path, Stamp | None, bool, bool]:
        try:
            stat = path.stat()
        except OSError:
            return path, None, False, False
        stamp = (stat.st_size, stat.st_mtime_ns)
        hit = known.get(str(path))
        if hit is not None and hit[:2] == stamp:
            return path, stamp, hit[2], False
        return path, stamp, _decodes(reader, path, draft_size), True

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(check, paths))
    decoded = [(str(p), *stamp, ok) for p, stamp, ok, new in results if new and stamp is not None]
    log.info(
        "decode check: %d of %d images decoded, %d known from before",
        len(decoded),
        len(paths),
        len(paths) - len(decoded),
    )
    if cache is not None:
        cache.store(decoded)
    return [path for path, _, ok, _ in results if not ok]
