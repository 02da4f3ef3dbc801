"""Attention transfer (AT).

Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer" (ICLR 2017, arXiv 1612.03928).

Attention map of a feature F ∈ R^{C×H×W} (paper Eq. 1 with F_sum^p):

    Q = vec( Σ_c |F_c|^p )

Paper, Eq. 2, with β the weight::

    L_AT = (β/2) · Σ_j ‖ Q_S^j / ‖Q_S^j‖₂ − Q_T^j / ‖Q_T^j‖₂ ‖_p        (p = 2)

averaged over the batch: a *non-squared* L2 distance between the L2-normalised maps.

Authors' code (``szagoruyko/attention-transfer``, ``utils.at_loss``), copied by RepDistiller and used
by the DCT paper's AT baseline: the map is the channel *mean* of F^p (the scale cancels after
normalisation), and the distance is the *squared* difference averaged over batch and positions,
``(at(x) − at(y)).pow(2).mean()``, summed over layers and multiplied by β (1000 in RepDistiller and
the DCT repo). RepDistiller also adaptive-average-pools the larger map when the spatial sizes differ.

``mode="code"`` (default) reproduces the code; ``mode="paper"`` implements Eq. 2 including β/2 and
requires equal spatial sizes. Both use |F|^p, identical to F^p for the default p = 2. The sum over j runs
over every tapped pair (``select=None``, default; the code's four stage outputs) or over the pairs
``select`` names (indices into ``Features.maps``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor

from kdscene.features import Features
from kdscene.losses.base import (
    DistillLoss,
    as_select,
    check_choice,
    check_same_count,
    pool_to_smaller,
    select_taps,
    upcast,
)

ATMode = Literal["code", "paper"]


def attention_map(fmap: Tensor, p: float = 2.0) -> Tensor:
    """L2-normalised, flattened channel mean of |F|^p; (B, C, H, W) -> (B, H·W)."""
    am = upcast(fmap).abs().pow(p).mean(dim=1)
    return F.normalize(am.flatten(1), dim=1)


class ATLoss(DistillLoss):
    """Attention transfer over all tapped maps.

    Args:
        weight: β (1000 in RepDistiller and the DCT paper's AT baseline).
        p: exponent of the attention map (2 in the paper's experiments).
        mode: ``"code"`` (default; squared difference averaged over batch and positions, pooling
            on size mismatch) or ``"paper"`` (Eq. 2: (1/2)·batch mean of the L2 distance).
        select: indices of the tapped pairs to use (negative allowed); ``None`` (default) = all.
    """

    functional: ClassVar[str] = "attention_map"

    def __init__(
        self,
        weight: float = 1000.0,
        p: float = 2.0,
        mode: ATMode = "code",
        select: Sequence[int] | None = None,
    ) -> None:
        super().__init__(weight)
        self.p = p
        self.mode = check_choice("ATLoss", "mode", mode, ATMode)
        self.select = as_select(select, "ATLoss")

    def extra_repr(self) -> str:
        return f"weight={self.weight}, p={self.p}, mode={self.mode!r}, select={self.select}"

    def _one_scale(self, s: Tensor, t: Tensor, name: str) -> Tensor:
        if self.mode == "code":
            s, t = pool_to_smaller(s, t)
            return (attention_map(s, self.p) - attention_map(t, self.p)).pow(2).mean()
        if s.shape[-2:] != t.shape[-2:]:
            raise ValueError(
                f"ATLoss(mode='paper'): student map {name!r} is {tuple(s.shape[-2:])} but the "
                f"teacher's is {tuple(t.shape[-2:])}; the paper's loss needs equal sizes"
            )
        diff = attention_map(s, self.p) - attention_map(t, self.p)
        return 0.5 * diff.norm(dim=1).mean()

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        check_same_count(student, teacher, "ATLoss")
        total = sum(
            self._one_scale(student.maps[i], teacher.maps[i], student.names[i])
            for i in select_taps(len(student.maps), self.select, "ATLoss")
        )
        return {"at": self.weight * total}
