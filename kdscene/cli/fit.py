"""One Lightning fit (and test) of one stage of a recipe: data, module, callbacks, loggers, trainer."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, open_dict

from kdscene.cache import TeacherCache, prepare_replay
from kdscene.callbacks.resume import ResumeState
from kdscene.cli.config import to_plain
from kdscene.cli.recipe import Recipe, Stage
from kdscene.models import BackboneSpec
from kdscene.module import DistillationModule

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"  # written into a run's (or stage's) folder when it has finished


@dataclass(frozen=True)
class RunResult:
    """What a job (or one of its stages) leaves behind.

    Args:
        metrics: every logged value at the end (``val/acc_best``, ``test/acc_top1`` ...).
        best_checkpoint: the best checkpoint by the monitored metric (``""`` when none was saved).
        last_checkpoint: the checkpoint of the final epoch (``""`` when none was saved).
        output_dir: the folder the run (or stage) wrote into.
        stages: for a multi-stage job, each stage's own result by name, in order.
    """

    metrics: dict[str, float]
    best_checkpoint: str = ""
    last_checkpoint: str = ""
    output_dir: str = ""
    stages: dict[str, RunResult] = field(default_factory=dict)

    @property
    def handover(self) -> str:
        """The file a later stage starts from: the last checkpoint, else the best one."""
        return self.last_checkpoint or self.best_checkpoint

    def save(self, path: str | Path, max_epochs: int | None) -> None:
        """Write this result as JSON (atomically), with the epochs it was trained for."""
        record = {**dataclasses.asdict(self), "max_epochs": max_epochs}
        tmp = Path(path).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> tuple[RunResult, int | None]:
        """A result written by :meth:`save`, and the epochs it was trained for."""
        record = json.loads(Path(path).read_text())
        max_epochs = record.pop("max_epochs", None)
        stages = {k: cls(**v) for k, v in record.pop("stages", {}).items()}
        return cls(**record, stages=stages), max_epochs


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict group (callbacks, loggers) that has a ``_target_``."""
    if not group:
        return []
    return [
        instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node
    ]


def backbone_spec(
    node: DictConfig | None, num_classes: int, layers: Sequence[str] | None = None
) -> BackboneSpec | None:
    """Instantiate a teacher/student config, filling ``num_classes`` from the data when it is null.

    ``layers`` (the taps a recipe chooses) replace the backbone's default taps only where the
    backbone config leaves ``layers: null``, so that an explicit ``teacher.layers=[...]`` still wins.
    """
    if node is None:
        return None
    spec: BackboneSpec = instantiate(node, _convert_="all")
    if spec.num_classes is not None and spec.num_classes != num_classes:
        raise ValueError(
            f"backbone {spec.label!r} is configured for {spec.num_classes} classes but the data has "
            f"{num_classes}; set num_classes: null to take it from the data"
        )
    spec = dataclasses.replace(spec, num_classes=num_classes)
    if layers and spec.layers:
        log.info("%s.layers=%s is set: the recipe's taps %s are ignored", spec.label, spec.layers, layers)
    elif layers:
        spec = dataclasses.replace(spec, layers=list(layers))
    return spec


def scheduler_partial(node: DictConfig | None) -> tuple[Any, str]:
    """The scheduler partial and its stepping interval (the config's optional ``interval`` key)."""
    if not node:
        return None, "epoch"
    node = node.copy()
    with open_dict(node):
        interval = node.pop("interval", "epoch")
    if interval not in ("epoch", "step"):
        raise ValueError(f"scheduler.interval must be 'epoch' or 'step', got {interval!r}")
    return instantiate(node), interval


def build_module(
    cfg: DictConfig, recipe: Recipe, stage: Stage, num_classes: int, num_samples: int | None = None
) -> DistillationModule:
    """The DistillationModule of one stage of ``recipe`` for a data set with ``num_classes`` classes.

    ``num_samples`` (the training set's size) is handed to losses that keep one entry per sample.
    """
    scheduler, interval = scheduler_partial(cfg.get("scheduler"))
    return DistillationModule(
        student=backbone_spec(cfg.student, num_classes, recipe.student_layers),
        teacher=backbone_spec(cfg.get("teacher"), num_classes, recipe.teacher_layers),
        distill=instantiate(stage.terms, _convert_="all"),
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        scheduler_interval=interval,
        image_size=cfg.data.image_size,
        channels_last=cfg.channels_last,
        nonfinite=cfg.get("nonfinite", "raise"),
        train_student=stage.train_student,
        num_samples=num_samples,
        teacher_cache=cfg.get("teacher_cache"),
        compile=cfg.get("compile", False),
        backbone_lr_scale=cfg.get("backbone_lr_scale", 1.0),
    )


def _train_size(datamodule: L.LightningDataModule, stage: Stage) -> int | None:
    """The training set's size when a term's constructor asks for ``num_samples`` (else ``None``)."""
    factories = instantiate(stage.terms, _convert_="all")
    wants = any(
        "num_samples" in inspect.signature(getattr(f, "func", f)).parameters for f in factories.values()
    )
    if not wants:
        return None
    datamodule.prepare_data()  # e.g. generate the synthetic scenes; the Trainer's later call is a no-op
    datamodule.setup("fit")  # the size after any images dropped by the decode check
    return len(datamodule.datasets["train"])


def _replay_cache(cfg: DictConfig, recipe: Recipe, datamodule: L.LightningDataModule) -> None:
    """Before anything is built: check that the teacher cache fits this run, then serve its views."""
    teacher = backbone_spec(cfg.teacher, datamodule.num_classes, recipe.teacher_layers)
    settings = cfg.get("cache") or {}
    verify, device = settings.get("verify", 0), settings.get("device", "auto")
    prepare_replay(TeacherCache(cfg.teacher_cache), datamodule, teacher, verify, device)


def _callbacks(cfg: DictConfig, stage: Stage, has_logger: bool) -> list[L.Callback]:
    """The config's and the stage's callbacks, and :class:`ResumeState` (random states in checkpoints).

    A learning-rate monitor needs a logger: with ``logger=none`` it is left out (with a log line).
    """
    callbacks = instantiate_group(cfg.get("callbacks")) + instantiate_group(stage.callbacks)
    if not has_logger and any(isinstance(c, LearningRateMonitor) for c in callbacks):
        log.info("no logger: the learning-rate monitor is left out")
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return [*callbacks, ResumeState()]


def _finish_wandb(loggers: list) -> None:
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()


def _checkpoints(trainer: L.Trainer, output_dir: str) -> tuple[str, str]:
    """(best, last) checkpoint paths of the run (``""`` where none was saved)."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    last = ""
    for callback in trainer.checkpoint_callbacks:  # save_last, or an unmonitored "every epoch" callback
        unmonitored = callback.best_model_path if callback.monitor is None else ""
        last = callback.last_model_path or unmonitored or last
    default = Path(output_dir) / "checkpoints" / "last.ckpt"  # ddp_spawn hands back only the best path
    return best, last or (str(default) if default.is_file() else "")


# Warnings a user can do nothing about, silenced by their exact text (nothing else is filtered):
# the frozen teacher is in eval mode by design; Lightning 2.6 calls a torch API that torch 2.14 deprecates.
KNOWN_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode at the start of training",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


class _DropAdvert(logging.Filter):
    """Lightning 2.6 advertises a cloud logger at every fit."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def tidy_console() -> None:
    """Ignore :data:`KNOWN_WARNINGS` and Lightning's advert; print each Lightning log line once.

    The ``lightning`` package adds its own console handler whatever the root logger has, so under
    Hydra (whose handlers write the console and ``train.log``) every Lightning line appears twice; its
    handler is removed when the root logger has handlers. Idempotent.
    """
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdvert) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdvert())
    own = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        for handler in [h for h in own.handlers if type(h) is logging.StreamHandler]:
            own.removeHandler(handler)


def fit_stage(cfg: DictConfig, recipe: Recipe, stage: Stage) -> RunResult:
    """Seed, build data, module, callbacks, loggers and trainer for ``stage``; fit; test; return."""
    tidy_console()
    L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    if cfg.get("teacher_cache") and cfg.train and cfg.get("teacher"):
        _replay_cache(cfg, recipe, datamodule)
    module = build_module(cfg, recipe, stage, datamodule.num_classes, _train_size(datamodule, stage))
    if module.needs_indices:  # e.g. CRD's memory bank: training batches carry the samples' indices
        datamodule.return_index = True
    loggers = instantiate_group(cfg.get("logger"))
    callbacks = _callbacks(cfg, stage, has_logger=bool(loggers))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(to_plain(cfg))
    try:
        if cfg.train:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=False)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best, last = _checkpoints(trainer, cfg.paths.output_dir)
        if cfg.test:
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=False)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    finally:
        _finish_wandb(loggers)
    log.debug("metrics: %s", metrics)
    result = RunResult(metrics, best, last, str(cfg.paths.output_dir))
    if not cfg.trainer.get("fast_dev_run"):
        result.save(Path(cfg.paths.output_dir) / RESULT_FILE, cfg.trainer.get("max_epochs"))
    return result
