"""``kdscene-train``: run a job (one fit, or the stages of a multi-stage recipe), then test.

Teacher training is the same command with ``distill=none`` and the teacher's architecture as student:
``kdscene-train distill=none student.name=resnet50``; the saved checkpoint then serves as
``teacher.checkpoint=<path>`` (kdscene strips the ``student.`` prefix when loading it).

From Python, :func:`train` runs a composed config (see :func:`kdscene.cli.config.compose_config`)
and returns a :class:`~kdscene.cli.fit.RunResult`. Torch and Lightning are imported only when a job
runs, so that ``--help`` and tab completion answer at once.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from kdscene.cli.config import CONFIG_DIR, exit_on_moved_keys
from kdscene.cli.recipe import parse_recipe, stage_config, stage_outputs

if TYPE_CHECKING:
    from kdscene.cli.fit import RunResult

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> RunResult:
    """Run the job described by ``cfg`` and return its result.

    A single-stage recipe is one fit in ``cfg.paths.output_dir``. A multi-stage recipe runs its
    stages in order, each in ``<output_dir>/<stage>``, handing each stage's checkpoint to the later
    ones (``${kdscene.stage:<name>}``); a stage with ``checkpoint: <path>`` is skipped and that file
    handed on. The result is the last stage's, with every stage's under ``stages``.
    """
    from kdscene.cli.fit import RunResult, fit_stage

    recipe = parse_recipe(cfg.distill)
    outputs: dict[str, str] = {}
    results: dict[str, RunResult] = {}
    with stage_outputs(outputs):
        for i, stage in enumerate(recipe.stages):
            if stage.checkpoint:
                log.info("stage %s skipped: using %s", stage.name, stage.checkpoint)
                outputs[stage.name] = stage.checkpoint
                continue
            if stage.name:
                log.info("stage %s", stage.name)
            last = i == len(recipe.stages) - 1
            result = fit_stage(stage_config(cfg, recipe, stage, last), recipe, stage)
            results[stage.name] = result
            outputs[stage.name] = result.handover
            if not last and not result.handover and not cfg.trainer.get("fast_dev_run"):
                raise RuntimeError(
                    f"stage {stage.name!r} wrote no checkpoint for the next stages; keep checkpointing on "
                    "(trainer.enable_checkpointing, callbacks=default saves last.ckpt)"
                )
    final = results.get(recipe.stages[-1].name, RunResult({}))
    return dataclasses.replace(final, stages=results) if recipe.multi_stage else final


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    result = train(cfg)
    return result.metrics.get(cfg.get("optimized_metric"))


def main() -> None:
    """Console entry point of ``kdscene-train`` (Hydra's command line: overrides, ``-m``, ``--help``)."""
    exit_on_moved_keys(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
