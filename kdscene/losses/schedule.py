"""Weight schedules for distillation terms, usable without Lightning.

A schedule sets ``loss.weight`` from ``loss.base_weight`` (the configured weight) at each epoch; the
losses themselves never know about epochs. :class:`kdscene.callbacks.LossWeightWarmup` drives
:class:`LinearWarmup` from a Lightning ``Trainer``; a plain training loop calls ``apply`` itself::

    warmup = LinearWarmup(20)
    for epoch in range(epochs):
        warmup.apply([review_loss], epoch)
        ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from kdscene.losses.base import DistillLoss

Losses = Mapping[str, DistillLoss] | nn.ModuleDict | Iterable[DistillLoss]


class LinearWarmup:
    """Linear warm-up of term weights: factor ``min((epoch + 1) / warmup_epochs, 1)`` for 0-based epochs.

    ReviewKD, FAM-KD and DKD multiply their loss by ``min(epoch / W, 1)`` with epochs counted from 1
    (mdistiller passes ``epoch`` starting at 1), so the first epoch already uses ``1 / W`` of the weight.

    Args:
        warmup_epochs: W, epochs until the full weight; ``0`` (or less) disables the warm-up (factor 1).
    """

    def __init__(self, warmup_epochs: int) -> None:
        self.warmup_epochs = int(warmup_epochs)

    def factor(self, epoch: int) -> float:
        """The weight factor of the 0-based ``epoch``."""
        if self.warmup_epochs <= 0:
            return 1.0
        return min((epoch + 1) / self.warmup_epochs, 1.0)

    def apply(self, losses: Losses, epoch: int) -> float:
        """Set ``loss.weight = loss.base_weight * factor(epoch)`` on every loss; return the factor.

        Args:
            losses: the losses, or a mapping (``dict``, ``nn.ModuleDict``) whose values are the losses.
            epoch: the 0-based epoch about to start.
        """
        factor = self.factor(epoch)
        items = losses.values() if isinstance(losses, (Mapping, nn.ModuleDict)) else losses
        for loss in items:
            if not isinstance(loss, DistillLoss):
                raise TypeError(f"LinearWarmup scales DistillLoss weights, got {type(loss).__name__}")
            loss.weight = loss.base_weight * factor
        return factor

    def __repr__(self) -> str:
        return f"LinearWarmup(warmup_epochs={self.warmup_epochs})"
