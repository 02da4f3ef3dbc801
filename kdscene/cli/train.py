"""``kdscene-train``: fit a DistillationModule from a Hydra config, then test its best checkpoint.

Teacher training is the same command with ``distill=none`` and the teacher's architecture as student:
``kdscene-train distill=none student.name=resnet50``; the saved checkpoint then serves as
``teacher.checkpoint=<path>`` (kdscene strips the ``student.`` prefix when loading it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from kdscene.cli.common import CONFIG_DIR, backbone_spec, instantiate_group, to_plain
from kdscene.models import BackboneSpec
from kdscene.module import DistillationModule

log = logging.getLogger(__name__)


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


def apply_distill_taps(spec: BackboneSpec | None, layers: Sequence[str] | None, role: str) -> None:
    """Let a distill config choose the tapped layers (``teacher_layers``/``student_layers``).

    They replace the preset's taps only where the backbone config leaves ``layers: null``, so that an
    explicit ``teacher.layers=[...]`` override still wins. ReviewKD uses this to tap pre-activations.
    """
    if spec is None or not layers:
        return
    if spec.layers:
        log.info("%s.layers=%s is set: distill.%s_layers is ignored", role, spec.layers, role)
        return
    spec.layers = list(layers)


def build_module(cfg: DictConfig, num_classes: int) -> DistillationModule:
    """The DistillationModule described by ``cfg`` for a data set with ``num_classes`` classes."""
    scheduler, interval = scheduler_partial(cfg.get("scheduler"))
    student = backbone_spec(cfg.student, num_classes)
    teacher = backbone_spec(cfg.get("teacher"), num_classes)
    apply_distill_taps(student, cfg.distill.get("student_layers"), "student")
    apply_distill_taps(teacher, cfg.distill.get("teacher_layers"), "teacher")
    return DistillationModule(
        student=student,
        teacher=teacher,
        distill=instantiate(cfg.distill.terms, _convert_="all"),
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        scheduler_interval=interval,
        image_size=cfg.data.image_size,
        channels_last=cfg.channels_last,
        eval_teacher=cfg.eval_teacher,
        train_student=cfg.get("train_student", True),
    )


def _finish_wandb(loggers: list) -> None:
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()


def train(cfg: DictConfig) -> dict[str, float]:
    """Seed, build data, module, callbacks, loggers and trainer; fit; test; return the metrics."""
    return run(cfg)[0]


def run(cfg: DictConfig) -> tuple[dict[str, float], str]:
    """Like :func:`train`, and also return the best checkpoint's path ("" when none was saved).

    A distill config with ``stages`` runs them in order (:mod:`kdscene.cli.stages`).
    """
    if cfg.distill.get("stages"):
        from kdscene.cli.stages import run_stages

        return run_stages(cfg)
    return run_single(cfg)


def run_single(cfg: DictConfig) -> tuple[dict[str, float], str]:
    """One Lightning fit (and test) of the module described by ``cfg``."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    module = build_module(cfg, datamodule.num_classes)
    callbacks = instantiate_group(cfg.get("callbacks")) + instantiate_group(cfg.distill.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(to_plain(cfg))
    try:
        if cfg.train:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=False)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if cfg.test:
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=False)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    finally:
        _finish_wandb(loggers)
    log.info("metrics: %s", metrics)
    return metrics, best


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
