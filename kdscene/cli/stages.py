"""Multi-stage methods as a sequence of Lightning fits, each with its own terms and optimizer.

A distill config with a ``stages`` mapping (instead of ``terms``) runs one fit per stage, in order::

    stages:
      dictionary:                     # stage name (also the output sub-folder)
        checkpoint: null              # a path here skips the stage and hands this file on
        max_epochs: 10
        train_student: false          # train only what the terms own
        optimizer: {...}              # replaces the root optimizer for this stage (optional)
        scheduler: {...}              # replaces the root scheduler (optional; null = none)
        student_checkpoint: null      # initialise the student from this file (optional)
        terms: {...}                  # the stage's loss terms, as in a single-stage config
        callbacks: {...}              # extra callbacks for this stage (optional)

Later stages refer to an earlier stage's output with the resolver ``${kdscene.stage:<name>}``: the
``last.ckpt`` that stage wrote (or its ``checkpoint`` if it was skipped). Every stage's result is
therefore a checkpoint on disk, so a crashed sequence resumes by pointing ``checkpoint`` at the
finished stages.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from kdscene.cli.train import run_single

log = logging.getLogger(__name__)

_OUTPUTS: dict[str, str] = {}
_STAGE_KEYS = {
    "checkpoint",
    "max_epochs",
    "train_student",
    "optimizer",
    "scheduler",
    "student_checkpoint",
    "terms",
    "callbacks",
}


def _stage_output(name: str) -> str:
    if name not in _OUTPUTS:
        raise KeyError(f"stage {name!r} has not run yet; finished stages: {sorted(_OUTPUTS)}")
    return _OUTPUTS[name]


OmegaConf.register_new_resolver("kdscene.stage", _stage_output, replace=True)


def _stage_config(cfg: DictConfig, name: str, stage: DictConfig) -> DictConfig:
    unknown = set(stage) - _STAGE_KEYS
    if unknown:
        raise KeyError(f"stage {name!r} has unknown keys {sorted(unknown)}; allowed: {sorted(_STAGE_KEYS)}")
    if "terms" not in stage:
        raise KeyError(f"stage {name!r} has no terms")
    out = cfg.copy()
    with open_dict(out):
        out.distill = OmegaConf.create({"terms": stage.terms, "callbacks": stage.get("callbacks") or {}})
        for key in ("teacher_layers", "student_layers"):  # the config's taps hold for every stage
            out.distill[key] = cfg.distill.get(key)
        for key in ("optimizer", "scheduler"):
            if key in stage:
                out[key] = stage[key]
        if stage.get("max_epochs") is not None:
            out.trainer.max_epochs = stage.max_epochs
        out.train_student = stage.get("train_student", True)
        if stage.get("student_checkpoint"):
            out.student.checkpoint = stage.student_checkpoint
        out.paths.output_dir = str(Path(cfg.paths.output_dir) / name)
        out.test = cfg.test and name == list(cfg.distill.stages)[-1]
    return out


def run_stages(cfg: DictConfig) -> tuple[dict[str, float], str]:
    """Run every stage of ``cfg.distill.stages``; return the last stage's metrics and best checkpoint."""
    _OUTPUTS.clear()
    metrics: dict[str, float] = {}
    best = ""
    for name, stage in cfg.distill.stages.items():
        if stage.get("checkpoint"):
            log.info("stage %s skipped: using %s", name, stage.checkpoint)
            _OUTPUTS[name] = str(stage.checkpoint)
            continue
        log.info("stage %s", name)
        metrics, best = run_single(_stage_config(cfg, name, stage))
        last = Path(cfg.paths.output_dir) / name / "checkpoints" / "last.ckpt"
        _OUTPUTS[name] = str(last) if last.is_file() else best
        if not _OUTPUTS[name] and not cfg.trainer.get("fast_dev_run"):
            raise RuntimeError(
                f"stage {name!r} wrote no checkpoint for the next stages; keep checkpointing on "
                "(trainer.enable_checkpointing, callbacks=default saves last.ckpt)"
            )
    return metrics, best
