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
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, open_dict

from kdscene.cli.config import CONFIG_DIR, exit_on_moved_keys, resume_argv
from kdscene.cli.recipe import Recipe, parse_recipe, stage_config, stage_outputs
from kdscene.cli.sweep import register_dirname_resolver

if TYPE_CHECKING:
    from kdscene.cli.fit import RunResult

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> RunResult:
    """Run the job described by ``cfg`` and return its result.

    A single-stage recipe is one fit in ``cfg.paths.output_dir``. A multi-stage recipe runs its
    stages in order, each in ``<output_dir>/<stage>``, handing each stage's checkpoint to the later
    ones (``${kdscene.stage:<name>}``); a stage with ``checkpoint: <path>`` is skipped and that file
    handed on. The result is the last stage's, with every stage's under ``stages``.

    ``ckpt_path=last`` continues the job in ``output_dir``: a finished fit (its ``result.json`` says
    it ran the configured epochs) is skipped and its result reused, an interrupted one resumes from
    its ``last.ckpt``, one that never started starts. ``ckpt_path=<file>`` resumes a single fit.
    """
    from kdscene.cli.fit import RESULT_FILE, RunResult, fit_stage

    recipe = parse_recipe(cfg.distill)
    outputs: dict[str, str] = {}
    results: dict[str, RunResult] = {}
    with stage_outputs(outputs):
        for i, stage in enumerate(recipe.stages):
            if stage.checkpoint:
                log.info("stage %s skipped: using %s", stage.name, stage.checkpoint)
                outputs[stage.name] = stage.checkpoint
                continue
            last = i == len(recipe.stages) - 1
            stage_cfg = stage_config(cfg, recipe, stage, last)
            result = _finished(stage_cfg) or fit_stage(_with_resume(stage_cfg, recipe), recipe, stage)
            results[stage.name] = result
            outputs[stage.name] = result.handover
            if not last and not result.handover and not cfg.trainer.get("fast_dev_run"):
                raise RuntimeError(
                    f"stage {stage.name!r} wrote no checkpoint for the next stages; keep checkpointing on "
                    "(trainer.enable_checkpointing, callbacks=default saves last.ckpt)"
                )
    final = results.get(recipe.stages[-1].name, RunResult({}))
    if not recipe.multi_stage:
        return final
    job = dataclasses.replace(final, output_dir=str(cfg.paths.output_dir), stages=results)
    if not cfg.trainer.get("fast_dev_run"):  # the job's own record, beside its stages' folders
        job.save(Path(cfg.paths.output_dir) / RESULT_FILE, None)
    return job


def _finished(cfg: DictConfig) -> RunResult | None:
    """With ``ckpt_path=last``, the saved result of a fit that already ran its configured epochs."""
    from kdscene.cli.fit import RESULT_FILE, RunResult

    path = Path(cfg.paths.output_dir) / RESULT_FILE
    if cfg.get("ckpt_path") != "last" or not path.is_file():
        return None
    result, max_epochs = RunResult.load(path)
    if max_epochs != cfg.trainer.get("max_epochs"):
        return None
    log.info("%s finished earlier (%s epochs): its result is reused", cfg.paths.output_dir, max_epochs)
    return result


def _with_resume(cfg: DictConfig, recipe: Recipe) -> DictConfig:
    """``cfg`` with ``ckpt_path`` resolved for this fit: ``last`` becomes its ``last.ckpt`` (or none)."""
    ckpt = cfg.get("ckpt_path")
    if ckpt and ckpt != "last" and recipe.multi_stage:
        raise ValueError(
            f"ckpt_path={ckpt} would resume every stage from one file; to continue a multi-stage job use "
            "ckpt_path=last in its folder (finished stages are skipped, the interrupted one resumes)"
        )
    if ckpt == "last":
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        ckpt = str(path) if path.is_file() else None
        log.info(
            "resuming from %s" if ckpt else "no last.ckpt in %s/checkpoints: starting",
            ckpt or path.parent.parent,
        )
    with open_dict(cfg):
        cfg.ckpt_path = ckpt
    return cfg


def report(result: RunResult, output_dir: str) -> str:
    """The closing lines of a run: its folder and its test metrics."""
    tested = {k: v for k, v in result.metrics.items() if k.startswith(("test/", "teacher/test_"))}
    shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(tested.items())) or "no test metrics (test=false)"
    return f"kdscene: run folder {output_dir}\nkdscene: {shown}"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    result = train(cfg)
    print(report(result, cfg.paths.output_dir), flush=True)
    return result.metrics.get(cfg.get("optimized_metric"))


def main() -> None:
    """Console entry point of ``kdscene-train`` (Hydra's command line: overrides, ``-m``, ``--help``)."""
    exit_on_moved_keys(sys.argv[1:])
    register_dirname_resolver()  # names a sweep's job folders (conf/hydra/default.yaml)
    sys.argv[1:] = resume_argv(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
