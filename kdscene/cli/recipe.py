"""The ``distill`` config node, parsed once into a typed :class:`Recipe` of one or more stages.

A single-stage recipe lists its loss terms::

    terms: {ce: {...}, kd: {...}}     # name -> loss factory (``_partial_: true``)
    callbacks: {...}                  # extra Lightning callbacks (optional; warm-ups)
    teacher_layers: [...]             # taps chosen by the method (optional; ReviewKD's ":pre" taps)
    student_layers: [...]             # (an explicit teacher.layers / student.layers wins)

A multi-stage recipe lists ``stages`` instead of ``terms``; each stage is one Lightning fit::

    stages:
      dictionary:                     # stage name (also the output sub-folder)
        checkpoint: null              # a path here skips the stage and hands this file on
        max_epochs: 10
        train_student: false          # train only what the terms own
        optimizer: {...}              # replaces the root optimizer for this stage (optional)
        scheduler: {...}              # replaces the root scheduler (optional; null = none)
        student_checkpoint: null      # initialise the student from this file (optional)
        terms: {...}                  # the stage's loss terms, as in a single-stage recipe
        callbacks: {...}              # extra callbacks for this stage (optional)

Later stages refer to an earlier stage's output with ``${kdscene.stage:<name>}``: the ``last.ckpt``
that stage wrote (or its ``checkpoint`` if it was skipped). The resolver exists only while a job's
stages run (:func:`stage_outputs`); values are resolved when their stage starts, not at parsing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

RECIPE_KEYS = ("terms", "stages", "callbacks", "teacher_layers", "student_layers")
STAGE_KEYS = (
    "terms",
    "callbacks",
    "checkpoint",
    "max_epochs",
    "train_student",
    "optimizer",
    "scheduler",
    "student_checkpoint",
)
RESOLVER = "kdscene.stage"


class RecipeError(KeyError):
    """A distill recipe has an unknown, missing or conflicting key; the message lists the valid ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def _check_keys(node: DictConfig, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in node if k not in allowed)
    if unknown:
        raise RecipeError(f"{where} has unknown keys {unknown}; the valid keys are {list(allowed)}")


@dataclass(frozen=True)
class Stage:
    """One Lightning fit of a recipe.

    Args:
        name: the stage's name and output sub-folder; ``""`` for a single-stage recipe (which
            writes into the run folder itself).
        node: the stage's settings (``terms``, ``callbacks`` and for named stages the keys of
            :data:`STAGE_KEYS`), still attached to the run's config and resolved when read.
    """

    name: str
    node: DictConfig

    @property
    def terms(self) -> DictConfig:
        """Term name -> loss factory config."""
        return self.node.terms

    @property
    def callbacks(self) -> DictConfig | None:
        """Extra callbacks of this stage (``None`` when it has none)."""
        return self.node.get("callbacks")

    @property
    def checkpoint(self) -> str | None:
        """A finished stage's output: set, the stage is skipped and this file handed on."""
        return self.node.get("checkpoint") or None

    @property
    def train_student(self) -> bool:
        """``False`` freezes the student (only what the terms own trains)."""
        return bool(self.node.get("train_student", True))


@dataclass(frozen=True)
class Recipe:
    """A parsed ``distill`` node: its stages in order and the taps it chooses.

    Args:
        stages: one stage (named ``""``) for a single-stage recipe, else the named stages in order.
        teacher_layers: teacher taps chosen by the method (``None``: the backbone's own).
        student_layers: student taps chosen by the method.
    """

    stages: tuple[Stage, ...]
    teacher_layers: tuple[str, ...] | None = None
    student_layers: tuple[str, ...] | None = None

    @property
    def multi_stage(self) -> bool:
        """Whether the recipe has named stages (each writes into its own sub-folder)."""
        return bool(self.stages[0].name)


def _layers(node: DictConfig, key: str) -> tuple[str, ...] | None:
    value = node.get(key)
    return tuple(str(v) for v in value) if value else None


def _named_stages(stages: DictConfig) -> tuple[Stage, ...]:
    if not isinstance(stages, DictConfig) or not stages:
        raise RecipeError("distill.stages must map stage names to stage settings (and not be empty)")
    parsed = []
    for name, node in stages.items():
        where = f"distill.stages.{name}"
        if not isinstance(node, DictConfig):
            raise RecipeError(f"{where} must be a mapping with the keys {list(STAGE_KEYS)}")
        _check_keys(node, STAGE_KEYS, where)
        if not node.get("terms"):
            raise RecipeError(f"{where} has no terms")
        parsed.append(Stage(str(name), node))
    return tuple(parsed)


def parse_recipe(distill: DictConfig) -> Recipe:
    """Parse a ``distill`` node; raise :class:`RecipeError` naming any unknown or missing key."""
    _check_keys(distill, RECIPE_KEYS, "distill")
    has_terms, has_stages = bool(distill.get("terms")), "stages" in distill and distill.stages
    if has_terms == bool(has_stages):
        raise RecipeError("distill needs exactly one of 'terms' (one fit) or 'stages' (several fits)")
    if has_stages and distill.get("callbacks"):
        raise RecipeError("distill.callbacks is for single-stage recipes; give each stage its callbacks")
    stages = _named_stages(distill.stages) if has_stages else (Stage("", distill),)
    return Recipe(stages, _layers(distill, "teacher_layers"), _layers(distill, "student_layers"))


def stage_config(cfg: DictConfig, recipe: Recipe, stage: Stage, last: bool) -> DictConfig:
    """The run config of one stage: its optimizer, scheduler, epochs, student init and output folder.

    Its ``distill`` node holds only this stage's resolved view (terms, callbacks, taps), which is what
    the loggers record; later stages' ``${kdscene.stage:...}`` references are not in it.
    """
    out = copy.deepcopy(cfg)
    node = stage.node
    with open_dict(out):
        view = {"terms": node.terms, "callbacks": node.get("callbacks") or {}}
        view.update(teacher_layers=recipe.teacher_layers, student_layers=recipe.student_layers)
        out.distill = OmegaConf.create({**view, "stage": stage.name})
        for key in ("optimizer", "scheduler"):
            if key in node:
                out[key] = node[key]
        if node.get("max_epochs") is not None:
            out.trainer.max_epochs = node.max_epochs
        if node.get("student_checkpoint"):  # the earlier stage's student replaces any other weights
            out.student.update(checkpoint=node.student_checkpoint, init=None, weights=None)
        if stage.name:
            out.paths.output_dir = str(Path(cfg.paths.output_dir) / stage.name)
        out.test = bool(cfg.test) and last
    return out


@contextmanager
def stage_outputs(outputs: Mapping[str, str]) -> Iterator[None]:
    """Make ``${kdscene.stage:<name>}`` resolve to ``outputs[name]`` while the block runs."""

    def lookup(name: str) -> str:
        if name not in outputs:
            raise KeyError(f"stage {name!r} has not run yet; finished stages: {sorted(outputs)}")
        return outputs[name]

    OmegaConf.register_new_resolver(RESOLVER, lookup, replace=True)
    try:
        yield
    finally:
        OmegaConf.clear_resolver(RESOLVER)
