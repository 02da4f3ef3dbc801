"""Fake run folders with the real file formats, for kdscene-collect tests (no training).

The config files come from a real composition (``compose_config`` with the given overrides), saved the
way Hydra saves a job's (``.hydra/config.yaml`` without the ``hydra`` node, ``.hydra/hydra.yaml`` with
it, ``.hydra/overrides.yaml``); ``result.json`` is written by :class:`kdscene.cli.fit.RunResult` and
``csv/metrics.csv`` by kdscene's CSV logger, as a fit writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from kdscene.cli.config import compose_config
from kdscene.cli.fit import RESULT_FILE, RunResult
from kdscene.loggers import CSVLogger

Curve = Sequence[tuple[float, float]]  # (val top-1, val mean-class) per epoch, fractions


def _metrics(curve: Curve, teacher: tuple[float, float] | None) -> dict[str, float]:
    """The final metrics of a fit that logged ``curve`` (best checkpoint tested: test = best epoch)."""
    best = max(curve, key=lambda p: p[0])
    metrics = {
        "val/acc_top1": curve[-1][0],
        "val/acc_mean_class": curve[-1][1],
        "val/acc_best": best[0],
        "test/acc_top1": best[0],
        "test/acc_mean_class": best[1],
    }
    if teacher is not None:
        metrics.update({"teacher/val_acc_top1": teacher[0], "teacher/val_acc_mean_class": teacher[1]})
    return metrics


def _write_csv(folder: Path, curve: Curve) -> None:
    logger = CSVLogger(save_dir=str(folder), name="csv", version="")
    for epoch, (top1, mean_class) in enumerate(curve):
        logger.log_metrics({"train/loss": 1.0 / (epoch + 1), "epoch": epoch}, step=3 * epoch + 2)
        logger.log_metrics(
            {"val/acc_top1": top1, "val/acc_mean_class": mean_class, "epoch": epoch}, 3 * epoch + 2
        )
    logger.save()


def _fit_output(folder: Path, curve: Curve, teacher: tuple[float, float] | None, with_csv: bool) -> RunResult:
    folder.mkdir(parents=True, exist_ok=True)
    if with_csv:
        _write_csv(folder, curve)
    result = RunResult(
        _metrics(curve, teacher), str(folder / "best.ckpt"), str(folder / "last.ckpt"), str(folder)
    )
    result.save(folder / RESULT_FILE, len(curve))
    return result


def _hydra_files(folder: Path, overrides: Sequence[str]) -> None:
    cfg = compose_config("train", list(overrides), folder)
    hydra = cfg.hydra
    with open_dict(cfg):
        del cfg["hydra"]
    (folder / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra}), folder / ".hydra" / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), folder / ".hydra" / "overrides.yaml")


def write_run(
    folder: Path,
    overrides: Sequence[str],
    curve: Curve,
    teacher: tuple[float, float] | None = (0.77, 0.70),
    finished: bool = True,
    with_csv: bool = True,
) -> Path:
    """A single-stage run folder: its ``.hydra`` files and, when ``finished``, its fit's outputs."""
    _hydra_files(folder, overrides)
    if finished:
        _fit_output(folder, curve, teacher, with_csv)
    return folder


def write_staged_run(
    folder: Path,
    overrides: Sequence[str],
    stages: dict[str, Curve],
    teacher: tuple[float, float] | None = (0.77, 0.70),
    top_level: bool = True,
) -> Path:
    """A multi-stage run: each stage's outputs in ``<run>/<stage>/``; with ``top_level``, a run-level
    ``result.json`` whose ``stages`` hold every stage's result (the final stage's metrics at the top)."""
    _hydra_files(folder, overrides)
    results = {name: _fit_output(folder / name, curve, teacher, True) for name, curve in stages.items()}
    if top_level:
        final = list(results.values())[-1]
        RunResult(final.metrics, final.best_checkpoint, final.last_checkpoint, str(folder), results).save(
            folder / RESULT_FILE, len(list(stages.values())[-1])
        )
    return folder
