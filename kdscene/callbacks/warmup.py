"""Linear warm-up of distillation term weights, applied from outside the losses.

ReviewKD (Chen et al., CVPR 2021) and FAM-KD (Pham et al., WACV 2024) multiply their feature loss by
``min(epoch / warmup_epochs, 1)``, with epochs counted from 1 (mdistiller passes ``epoch`` starting at
1), so the first epoch already uses ``1 / warmup_epochs`` of the weight. The schedule itself is
:class:`kdscene.losses.LinearWarmup` (no Lightning); this callback runs it at each epoch start.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L

from kdscene.losses import CrossEntropyLoss, LinearWarmup


def warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """``min((epoch + 1) / warmup_epochs, 1)`` for a 0-based Lightning epoch; 1 when warm-up is off."""
    return LinearWarmup(warmup_epochs).factor(epoch)


class LossWeightWarmup(L.Callback):
    """Scale the weights of the named distill terms by the warm-up factor at each epoch start.

    Args:
        warmup_epochs: epochs until the full weight (0 disables the warm-up).
        terms: keys of ``DistillationModule.distill`` to scale; ``None`` scales every term except
            plain cross-entropy.
    """

    def __init__(self, warmup_epochs: int, terms: Sequence[str] | None = None) -> None:
        self.warmup_epochs = warmup_epochs
        self.schedule = LinearWarmup(warmup_epochs)
        self.terms = list(terms) if terms is not None else None

    def _selected(self, pl_module: L.LightningModule) -> list[str]:
        distill = pl_module.distill
        if self.terms is None:
            return [k for k, v in distill.items() if not isinstance(v, CrossEntropyLoss)]
        unknown = [t for t in self.terms if t not in distill]
        if unknown:
            raise KeyError(
                f"LossWeightWarmup: unknown terms {unknown}; the distill terms are {list(distill)}"
            )
        return self.terms

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        selected = [pl_module.distill[key] for key in self._selected(pl_module)]
        factor = self.schedule.apply(selected, trainer.current_epoch)
        pl_module.log("train/warmup_factor", factor, on_step=False, on_epoch=True)
