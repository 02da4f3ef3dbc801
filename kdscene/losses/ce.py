"""Cross-entropy on the student's logits against the ground-truth labels."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from kdscene.features import Features
from kdscene.losses.base import DistillLoss, require_logits


class CrossEntropyLoss(DistillLoss):
    """Weighted cross-entropy, the supervised term of every recipe.

    Args:
        weight: term weight (β in the DCT paper's L = β·CE + α·L_distill + δ·KD).
        label_smoothing: passed to :func:`torch.nn.functional.cross_entropy`.
    """

    needs_teacher: ClassVar[bool] = False

    def __init__(self, weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(weight)
        self.label_smoothing = label_smoothing

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        logits = require_logits(student, "CrossEntropyLoss", "student")
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return {"ce": self.weight * loss}
