"""Prepare a training run to replay a teacher cache: check it fits, cycle the views, verify a sample."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from kdscene.cache.header import run_description
from kdscene.cache.record import verify_cache
from kdscene.cache.store import TeacherCache
from kdscene.models import BackboneSpec

if TYPE_CHECKING:
    from kdscene.data import SceneDataModule

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``"auto"``: ``"cuda"`` when a GPU is available, else ``"cpu"``; any other value as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def prepare_replay(
    cache: TeacherCache,
    datamodule: SceneDataModule,
    teacher: BackboneSpec,
    verify: int = 0,
    device: str = "auto",
) -> dict[str, Any] | None:
    """Make ``datamodule`` serve the cache's views, after checking that the cache fits the run.

    Sets up the data module, compares the cache's header with the run's data, transform, sampling
    seed and teacher (a difference raises :class:`~kdscene.cache.CacheMismatchError` naming it), then
    sets ``return_index`` (batches carry the rows to read) and ``view_cycle`` (epoch ``e`` shows draw
    ``e mod K``; the order stays epoch ``e``'s).

    Args:
        cache: the opened cache (``DistillationModule.cached_teacher``).
        datamodule: the run's data module.
        teacher: the run's teacher spec (it is not built unless ``verify`` asks for it).
        verify: recompute this many recorded views with the live teacher (0: no check).
        device: where the verifying teacher runs (``"auto"``: a GPU when there is one).

    Returns:
        The verification report (views checked, worst relative error per field), or ``None``.
    """
    datamodule.prepare_data()
    datamodule.setup("fit")
    cache.check(run_description(datamodule, teacher))
    datamodule.return_index = True
    datamodule.view_cycle = cache.views
    log.info(
        "teacher cache %s: %d views of %d images, no teacher forward",
        cache.path,
        cache.views,
        cache.num_images,
    )
    if verify <= 0:
        return None
    with torch.random.fork_rng(devices=[]):  # building the teacher draws numbers: the run's stay as they were
        report = verify_cache(cache, datamodule, teacher, verify, resolve_device(device))
    log.info(
        "teacher cache verified on %d views: worst relative error %s",
        report["views"],
        report["max_rel_error"],
    )
    return report
