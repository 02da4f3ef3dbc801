"""``kdscene-cache``: record a teacher cache for a run, with the same configs and overrides as kdscene-train.

It reads the run's data (training split, transform, sampling seed), teacher (network, weights) and the
taps its ``distill`` recipe chooses, runs the teacher once over ``cache.views`` augmentation draws of
every training image and writes ``cache.path`` (default: ``<run folder>/teacher_cache``). Then train
with the same overrides plus ``teacher_cache=<that folder>``::

    kdscene-cache data=mit_indoor teacher.name=resnet50 teacher.checkpoint=r50.ckpt distill=dct_kd
    kdscene-train data=mit_indoor teacher.name=resnet50 teacher.checkpoint=r50.ckpt distill=dct_kd \\
        teacher_cache=logs/cache/runs/<time>/teacher_cache

``cache.views`` defaults to ``trainer.max_epochs``: every epoch then replays exactly the views a run
with the live teacher would draw. Fewer views make a smaller cache that training cycles through.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from kdscene.cli.config import CONFIG_DIR, exit_on_moved_keys
from kdscene.cli.recipe import parse_recipe

if TYPE_CHECKING:
    from kdscene.cache import TeacherCache

log = logging.getLogger(__name__)


def record(cfg: DictConfig) -> TeacherCache:
    """Record the teacher cache of the run ``cfg`` describes; returns it opened.

    Raises:
        ValueError: a term of the recipe needs the live teacher (the cache could not feed it).
    """
    import lightning as L
    from hydra.utils import instantiate

    from kdscene.cache import check_cacheable, record_cache, resolve_device
    from kdscene.cli.fit import backbone_spec, tidy_console

    tidy_console()
    L.seed_everything(cfg.seed, workers=True)
    recipe = parse_recipe(cfg.distill)
    for stage in recipe.stages:
        check_cacheable(instantiate(stage.terms, _convert_="all"))
    datamodule = instantiate(cfg.data)
    spec = backbone_spec(cfg.teacher, datamodule.num_classes, recipe.teacher_layers)
    settings = cfg.cache
    return record_cache(
        datamodule,
        spec,
        settings.path or Path(cfg.paths.output_dir) / "teacher_cache",
        views=int(settings.views),
        batch_size=settings.batch_size,
        device=resolve_device(settings.device),
        dtype=settings.dtype,
        channels_last=bool(cfg.channels_last),
    )


def report(cache: TeacherCache) -> str:
    """The closing lines: where the cache is, its size, and how to train from it."""
    per_view = cache.bytes_per_view()
    accuracy = cache.header.get("teacher_train_acc_top1", float("nan"))
    return (
        f"kdscene: teacher cache {cache.path}: {cache.views} views x {cache.num_images} images, "
        f"{per_view / 1024:.1f} KiB per view ({cache.header['dtype']}), "
        f"{per_view * cache.views * cache.num_images / 2**20:.1f} MiB; teacher top-1 on the views "
        f"{100 * accuracy:.2f}%\nkdscene: train with the same overrides and teacher_cache={cache.path}"
    )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    print(report(record(cfg)), flush=True)


def main() -> None:
    """Console entry point of ``kdscene-cache`` (Hydra's command line, as ``kdscene-train``)."""
    exit_on_moved_keys(sys.argv[1:])
    if not any(arg.startswith("task_name=") for arg in sys.argv[1:]):
        sys.argv.insert(1, "task_name=cache")  # runs go to logs/cache/runs/<time>
    _hydra_main()


if __name__ == "__main__":
    main()
