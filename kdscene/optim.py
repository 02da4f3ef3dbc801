"""The optimizer and scheduler of a DistillationModule: parameter groups and the schedule's length.

Two parameter groups when ``backbone_lr_scale`` differs from 1: the student's backbone learns at
``lr * backbone_lr_scale``, its classifier and the parameters the loss terms own (adapters,
dictionaries, filters) at the optimizer's ``lr``. That is the usual fine-tuning split (e.g. 0.1 for an
ImageNet- or Places365-initialised network whose classifier was rebuilt for the data set). A scheduler
that sets the learning rate itself from ``max_lr`` (OneCycleLR, CyclicLR) gets one value per group, so
that the ratio holds over the whole schedule; schedulers that scale each group's initial rate
(cosine, step, warm-up) keep it by construction.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from kdscene.models.taps import split_parameters


def _base_lr(optimizer: Callable[..., torch.optim.Optimizer]) -> float:
    """The ``lr`` the optimizer factory gives (its keyword, else the optimizer's default)."""
    keywords = getattr(optimizer, "keywords", {}) or {}
    if "lr" in keywords:
        return float(keywords["lr"])
    func = getattr(optimizer, "func", optimizer)
    default = inspect.signature(func).parameters.get("lr")
    if default is None or default.default is inspect.Parameter.empty:
        raise ValueError(f"backbone_lr_scale needs the optimizer's lr: give {func.__name__} an lr")
    return float(default.default)


def parameter_groups(
    student: nn.Module,
    head: str,
    others: Sequence[nn.Parameter],
    optimizer: Callable[..., torch.optim.Optimizer],
    backbone_lr_scale: float = 1.0,
) -> list[nn.Parameter] | list[dict[str, Any]]:
    """What the optimizer is built on: trainable parameters only, split in two groups when asked.

    Args:
        student: the student network.
        head: module path of its classifier (``BackboneSpec.tap_head``).
        others: parameters owned by the loss terms (always at the optimizer's ``lr``).
        optimizer: the optimizer factory (its ``lr`` is the head's).
        backbone_lr_scale: the backbone's learning rate as a fraction of ``lr`` (1: one group).

    Returns:
        A flat list of parameters (one group) or ``[backbone group, head group]`` dicts; a group with
        no trainable parameter is left out.
    """
    if not backbone_lr_scale > 0:
        raise ValueError(f"backbone_lr_scale must be > 0, got {backbone_lr_scale!r}")
    if backbone_lr_scale == 1.0:
        return [p for p in [*student.parameters(), *others] if p.requires_grad]
    backbone, classifier = split_parameters(student, head)
    lr = _base_lr(optimizer)
    # each group keeps its scale (PyTorch keeps extra keys of a group), for schedulers that set the rate
    groups = [
        {"params": backbone, "lr": lr * backbone_lr_scale, "lr_scale": backbone_lr_scale},
        {"params": [*classifier, *others], "lr": lr, "lr_scale": 1.0},
    ]
    for group in groups:
        group["params"] = [p for p in group["params"] if p.requires_grad]
    return [g for g in groups if g["params"]]


def scheduler_keywords(
    scheduler: Callable[..., Any], groups: list[nn.Parameter] | list[dict[str, Any]], total_steps: int | None
) -> dict[str, Any]:
    """Keywords to add when building ``scheduler``: ``total_steps`` when it needs one and the config left it
    unset, and one ``max_lr`` per group, ``max_lr x`` the group's ``lr_scale``, when the groups differ."""
    extra: dict[str, Any] = {}
    keywords = getattr(scheduler, "keywords", {}) or {}
    accepted = inspect.signature(getattr(scheduler, "func", scheduler)).parameters
    if total_steps is not None and "total_steps" in accepted and keywords.get("total_steps") is None:
        extra["total_steps"] = total_steps
    scales = [g.get("lr_scale", 1.0) for g in groups if isinstance(g, dict)]
    top = keywords.get("max_lr")
    if any(scale != 1.0 for scale in scales) and isinstance(top, (int, float)):
        extra["max_lr"] = [top * scale for scale in scales]
    return extra


def configure(
    optimizer: Callable[..., torch.optim.Optimizer],
    groups: list[nn.Parameter] | list[dict[str, Any]],
    scheduler: Callable[..., Any] | None,
    interval: str,
    stepping_batches: Callable[[], int],
) -> Any:
    """What ``LightningModule.configure_optimizers`` returns: the optimizer, and its scheduler if any.

    Args:
        optimizer: factory taking ``params=``.
        groups: from :func:`parameter_groups`.
        scheduler: factory taking ``optimizer=``, or ``None``.
        interval: ``"epoch"`` or ``"step"`` (a scheduler with ``total_steps`` must step per batch).
        stepping_batches: the run's number of optimizer steps (asked only when ``total_steps`` is unset).
    """
    built = optimizer(params=groups)
    if scheduler is None:
        return built
    total = None
    if needs_total_steps(scheduler):
        if interval != "step":
            raise ValueError("a scheduler with total_steps must step per batch: set scheduler.interval=step")
        total = stepping_batches()
    lr_scheduler = scheduler(optimizer=built, **scheduler_keywords(scheduler, groups, total))
    return {"optimizer": built, "lr_scheduler": {"scheduler": lr_scheduler, "interval": interval}}


def needs_total_steps(scheduler: Callable[..., Any] | None) -> bool:
    """Whether ``scheduler`` takes ``total_steps`` and the config left it unset."""
    if not isinstance(scheduler, functools.partial) or scheduler.keywords.get("total_steps") is not None:
        return False
    return "total_steps" in inspect.signature(scheduler.func).parameters
