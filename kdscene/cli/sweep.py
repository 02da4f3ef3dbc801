"""Where runs and sweeps write: job folders named by their overrides, and a callback that prints them.

``conf/hydra/default.yaml`` names a sweep's job folders ``${kdscene.dirname:${hydra.job.override_dirname}}``,
e.g. ``distill=at_kd,pair=r50_r18,seed=0``: :func:`job_dirname` makes the overrides safe as one folder
name (no ``/``, ``:``, ``*``...) and short enough for any file system. Entry points register the
resolver (:func:`register_dirname_resolver`) before Hydra reads the config. :class:`PrintFolders`
(``hydra.callbacks.folders``) prints the run or sweep folder when Hydra starts it. Imports Hydra and
OmegaConf only.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

MAX_DIRNAME = 120  # characters; file systems allow 255 bytes per folder name
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


def _last_key_parts(overrides: str) -> str:
    """``data.reader.num_classes=4,distill=kd`` -> ``num_classes=4,distill=kd``."""
    items = (item.split("=", 1) for item in overrides.split(","))
    return ",".join(f"{kv[0].rsplit('.', 1)[-1]}={kv[1]}" if len(kv) == 2 else kv[0] for kv in items)


def job_dirname(overrides: str, limit: int = MAX_DIRNAME) -> str:
    """A folder name for a job's overrides (``key=value,...``): readable, safe and unique.

    Characters that a file system may refuse become ``_``. A name longer than ``limit`` keeps only the
    last part of each dotted key (``num_classes=4``), then is cut to fit. A name changed in any of these
    ways ends with ``~`` and 8 hex digits of a hash of the full overrides, so that two jobs never share a
    folder; ``.hydra/overrides.yaml`` in the folder keeps them all.

    Args:
        overrides: Hydra's ``hydra.job.override_dirname`` of the job.
        limit: the longest name returned.

    Returns:
        The folder name (``""`` when the job has no overrides of its own).
    """
    safe = _UNSAFE.sub("_", overrides)
    if safe == overrides and len(safe) <= limit:
        return safe
    if len(safe) > limit:
        safe = _last_key_parts(safe)
    digest = hashlib.blake2s(overrides.encode(), digest_size=4).hexdigest()
    return f"{safe[: limit - 9]}~{digest}"


def register_dirname_resolver() -> None:
    """Make ``${kdscene.dirname:...}`` available (entry points and ``compose_config`` call this)."""
    if not OmegaConf.has_resolver("kdscene.dirname"):
        OmegaConf.register_new_resolver("kdscene.dirname", job_dirname)


def _folder(config: DictConfig, key: str) -> Path:
    return Path(str(config.hydra[key].dir)).resolve()


class PrintFolders(Callback):
    """Print the run folder of a run, and the sweep folder (plus ``kdscene-collect``) of a sweep."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before a single run: its folder."""
        print(f"kdscene: run folder {_folder(config, 'run')}", flush=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before a sweep's first job: the sweep folder that will hold one sub-folder per job."""
        print(f"kdscene: sweep folder {_folder(config, 'sweep')}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """After the sweep: the folder again, and the command that writes its results table."""
        folder = _folder(config, "sweep")
        print(f"kdscene: sweep done in {folder}", flush=True)
        print(f"kdscene: its results table: kdscene-collect {folder}", flush=True)
