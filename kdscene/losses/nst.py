"""Neuron selectivity transfer (NST).

Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer" (arXiv 1707.01219).
Port used here: RepDistiller ``distiller_zoo/NST.py`` (and its copy in mdistiller ``distillers/NST.py``).

Each channel of a map is one "neuron"; its spatial activation pattern, flattened and L2-normalised, is a
sample of the network's distribution of selectivity patterns. NST matches the student's and the teacher's
distributions with the squared maximum mean discrepancy. For a map F ∈ R^{C×H×W}, f^i = vec(F_i) / ‖vec(F_i)‖₂
(i = 1..C), and with C_S student and C_T teacher channels::

    MMD² = 1/C_T² Σ_{i,i'} k(f_T^i, f_T^i') + 1/C_S² Σ_{j,j'} k(f_S^j, f_S^j')
           − 2/(C_S C_T) Σ_{i,j} k(f_S^j, f_T^i)

with the polynomial kernel k(x, y) = (xᵀy + c)^d of the paper's best setting, d = 2, c = 0, as the code.
The three means also run over the batch; the teacher-teacher term is a constant for the student (kept, as
the code keeps it, so that the value is the MMD², ≥ 0). The channel counts may differ: no adapter is needed.

Paper and code. The paper writes the total loss as H(y, p_S) + λ/2 · MMD² and reports its own λ per
kernel; RepDistiller multiplies the MMD² summed over the distilled layers by β = 50 (``-b 50``), and
mdistiller's ``NST.LOSS.FEAT_WEIGHT`` is 50 too: ``weight`` is that β. The code also L2-normalises with
``F.normalize`` (norms floored at 1e-12), as kdscene does.

Layers (``select``): RepDistiller and mdistiller distil every stage output (``feat[1:-1]`` of (stem, stages,
pooled), resp. ``feats[1:]``); ``select=None`` (default) uses every tapped pair.

Sizes: when the maps of a pair differ in size the larger one is adaptive-average-pooled to the smaller one
(RepDistiller pools to a square (H, H); kdscene to (H, W), the same for square maps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from kdscene.features import Features
from kdscene.losses.base import DistillLoss, as_select, check_same_count, pool_to_smaller, select_taps, upcast


def selectivity(fmap: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, H·W): each channel's spatial pattern, L2-normalised."""
    return F.normalize(upcast(fmap).flatten(2), dim=2)


def poly2_kernel_mean(a: Tensor, b: Tensor) -> Tensor:
    """Mean over the batch and all channel pairs of (aᵢ · bⱼ)², for (B, C_a, n) and (B, C_b, n)."""
    return (a @ b.transpose(1, 2)).pow(2).mean()


def nst_mmd(student: Tensor, teacher: Tensor) -> Tensor:
    """MMD² with the degree-2 polynomial kernel between two maps' channel patterns (module docstring).

    Args:
        student: (B, C_S, H, W).
        teacher: (B, C_T, H', W'); the larger of the two is pooled to the other's size.

    Returns:
        A scalar; the teacher-teacher term is detached.
    """
    s, t = pool_to_smaller(student, teacher)
    fs, ft = selectivity(s), selectivity(t)
    return poly2_kernel_mean(ft, ft).detach() + poly2_kernel_mean(fs, fs) - 2.0 * poly2_kernel_mean(fs, ft)


class NSTLoss(DistillLoss):
    """NST over the selected pairs of tapped maps; returns ``{"nst": weight · Σ_pairs MMD²}``.

    Args:
        weight: β (50 in RepDistiller's script and mdistiller's config).
        select: indices of the tapped pairs to distil (negative allowed); ``None`` (default) = all.
    """

    functional: ClassVar[str] = "nst_mmd"

    def __init__(self, weight: float = 50.0, select: Sequence[int] | None = None) -> None:
        super().__init__(weight)
        self.select = as_select(select, "NSTLoss")

    def extra_repr(self) -> str:
        return f"weight={self.weight}, select={self.select}"

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        check_same_count(student, teacher, "NSTLoss")
        total = sum(
            nst_mmd(student.maps[i], teacher.maps[i])
            for i in select_taps(len(student.maps), self.select, "NSTLoss")
        )
        return {"nst": self.weight * total}
