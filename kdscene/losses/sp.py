"""Similarity-preserving knowledge distillation (SP).

Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019, arXiv 1907.09682); RepDistiller's
``distiller_zoo/SP.py`` (``Similarity``, "verified by original author"), which this module follows.

For a tapped layer pair, the activation maps of a batch of b samples are flattened to Q ∈ R^{b×chw}
(student and teacher may differ in c, h, w). The pairwise similarities (paper Sec. 3)::

    G̃ = Q · Qᵀ   (b × b),     G[i, :] = G̃[i, :] / ‖G̃[i, :]‖₂

are matched with::

    L_SP = (1 / b²) · Σ_{(l, l') ∈ I} ‖G_T^{(l)} − G_S^{(l')}‖_F²

and the total loss is CE + γ · L_SP. Paper and code agree on the formula; differences:

- ``F.normalize`` divides by max(‖row‖₂, 1e-12) (a zero row stays 0 instead of 0/0);
- RepDistiller uses one pair, the last convolutional stage (its ``feat[-2]``; ``feat[-1]`` is the
  pooled vector), with γ = 3000 on CIFAR-100 (``-b 3000``, the paper's CIFAR-10 γ as well). Here
  ``select`` picks tap indices into ``Features.maps``: default ``(-1,)``, the last tapped map; ``None``
  sums over every tapped pair (the paper's set I of several layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from kdscene.features import Features
from kdscene.losses.base import DistillLoss, as_select, check_same_count, select_taps, upcast


def similarity_matrix(x: Tensor) -> Tensor:
    """(b, ...) activations -> (b, b) row-L2-normalised Gram matrix G."""
    q = upcast(x).flatten(1)
    return F.normalize(q @ q.T, p=2, dim=1)


def sp_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """‖G_T − G_S‖_F² / b² for one pair of maps."""
    b = student.shape[0]
    diff = similarity_matrix(teacher) - similarity_matrix(student)
    return diff.pow(2).sum() / (b * b)


class SPLoss(DistillLoss):
    """SP on pairs of tapped maps; returns ``{"sp": weight · Σ_pairs L_SP}``.

    Args:
        weight: γ (3000, RepDistiller's CIFAR-100 script and the paper's CIFAR-10 setting).
        select: indices into ``Features.maps`` of the pairs to match (default ``(-1,)``: the last tap,
            as RepDistiller); ``None`` uses every tapped pair.
    """

    functional: ClassVar[str] = "similarity_matrix"

    def __init__(self, weight: float = 3000.0, select: Sequence[int] | None = (-1,)) -> None:
        super().__init__(weight)
        self.select = as_select(select, "SPLoss")

    def extra_repr(self) -> str:
        return f"weight={self.weight}, select={self.select}"

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        check_same_count(student, teacher, "SPLoss")
        if not student.maps:
            raise ValueError("SPLoss needs tapped feature maps (Features.maps is empty): set the layers")
        total = None
        for i in select_taps(len(student.maps), self.select, "SPLoss"):
            s, t = student.maps[i], teacher.maps[i]
            if s.shape[0] != t.shape[0]:
                raise ValueError(
                    f"SPLoss: batch sizes differ at tap {i}, student {s.shape[0]} vs teacher {t.shape[0]}"
                )
            term = sp_distance(s, t)
            total = term if total is None else total + term
        return {"sp": self.weight * total}
