"""Hinton knowledge distillation on logits.

Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (arXiv 1503.02531).

    L_KD = T² · (1/B) · Σ_b Σ_k p_t(k) · log(p_t(k) / p_s(k)),   p = softmax(z / T)

The T² factor keeps the gradient magnitude independent of T (paper, section 2). The KL divergence
is summed over classes and averaged over the batch, which is what RepDistiller's ``DistillKL`` and
the DCT paper's code (``Distillation Zoo/KD.py``, ``size_average=False`` then ``/ B``) compute.
``reduction="mean"`` instead averages over batch *and* classes (PyTorch's ``reduction="mean"``),
which some codebases use by mistake; it is 1/num_classes smaller.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor

from kdscene.features import Features
from kdscene.losses.base import DistillLoss, check_choice, require_logits, upcast

Reduction = Literal["batchmean", "mean"]


def kd_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    reduction: Reduction = "batchmean",
) -> Tensor:
    """T²-scaled KL(p_t ‖ p_s) between temperature-softened distributions."""
    log_p_s = F.log_softmax(upcast(student_logits) / temperature, dim=1)
    log_p_t = F.log_softmax(upcast(teacher_logits) / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction=reduction, log_target=True)
    return kl * temperature**2


class KDLoss(DistillLoss):
    """Hinton KD term.

    Args:
        weight: term weight (δ in the DCT paper; 1 in "X + KD" recipes, 0.8 for its KD baseline).
        temperature: softmax temperature T (4 in the DCT paper and SRM's ImageNet setting).
        reduction: ``"batchmean"`` (default, the authors' codes) or ``"mean"`` (see module doc).
    """

    functional: ClassVar[str] = "kd_divergence"
    cache_fields: ClassVar[tuple[str, ...]] = ("logits",)  # a teacher cache holds the logits

    def __init__(
        self, weight: float = 1.0, temperature: float = 4.0, reduction: Reduction = "batchmean"
    ) -> None:
        super().__init__(weight)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.reduction = check_choice("KDLoss", "reduction", reduction, Reduction)

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        s, t = require_logits(student, "KDLoss", "student"), require_logits(teacher, "KDLoss", "teacher")
        loss = kd_divergence(s, t, self.temperature, self.reduction)
        return {"kd": self.weight * loss}
