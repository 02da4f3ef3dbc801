"""Variational information distillation (VID).

Ahn, Hu, Damianou, Lawrence, Dai, "Variational Information Distillation for Knowledge Transfer"
(CVPR 2019, arXiv 1904.05835). Port used here: RepDistiller ``distiller_zoo/VID.py`` (marked "code from
author"), copied unchanged into the DCT paper's repository (``Distillation Zoo/VID.py``).

VID maximises a variational lower bound on the mutual information between a student map s and a
teacher map t by fitting a Gaussian q(t | s) whose mean μ(s) depends on the student map and whose
variance is one learned value per teacher channel, and minimising its negative log-likelihood::

    σ_c² = softplus(α_c) + ε = log(1 + exp(α_c)) + ε
    −log q(t | s) = Σ_{c,h,w} [ ½ log σ_c² + (t_{c,h,w} − μ_{c,h,w}(s))² / (2 σ_c²) ] + const
    L_VID = Σ_k λ_k · E[ −log q(t^(k) | s^(k)) ]           (k over the distilled pairs of layers)

μ is the port's regressor of 1×1 convolutions without bias, C_s → M → M → C_t with ReLUs in between (M =
the teacher's channels, as RepDistiller calls ``VIDLoss(s, t, t)``; option ``mid_channels``); the paper's
own μ networks were not checked line by line. α_c starts at
log(exp(init_pred_var − ε) − 1), so that σ_c² = init_pred_var (5) at the start. The constant ½ log 2π
is dropped. Each pair has its own regressor and α, trained with the student.

Differences between the paper and the authors' code, with the option that selects each:

- Reduction (``reduction``). The paper sums the log-likelihood over channels and positions and takes the
  expectation over the data; the code averages over batch, channels and positions (``torch.mean``), so
  its loss is 1/(C·H·W) of the paper's. ``"mean"`` (default) is the code, ``"sum"`` the paper (sum over
  C, H, W, mean over the batch), with one λ for all pairs (``weight``).
- Layers (``select``). RepDistiller distils ``feat[1:-1]``: every stage output of its networks (index 0
  is the stem, −1 the pooled vector). The DCT repository's ``features`` are (layer1, ..., layer4,
  pooled), so its ``features[1:-1]`` is layer2..layer4: ``select=[1, 2, 3]`` of kdscene's four stage
  taps (``conf/distill/vid.yaml`` writes ``[-3, -2, -1]``, the same taps). ``None`` (default) uses every
  tapped pair.
- Sizes. When a student and a teacher map differ in size, the larger one is adaptive-average-pooled to the
  smaller one before the regressor (RepDistiller pools to a square (H, H); kdscene pools to (H, W), the
  same for square maps). The regressor's 1×1 convolutions keep the size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscene.features import Features, TapInfo
from kdscene.losses.base import (
    DistillLoss,
    check_choice,
    check_probed,
    check_same_count,
    pool_to_smaller,
    select_taps,
    upcast,
)

Reduction = Literal["mean", "sum"]


def inverse_softplus(y: float) -> float:
    """α with softplus(α) = y (y > 0)."""
    return math.log(math.expm1(y))


class VIDRegressor(nn.Module):
    """Gaussian q(t | s) of one pair: mean μ(s) by 1×1 convolutions, variance softplus(α) + ε per channel.

    Args:
        in_channels: student channels.
        mid_channels: hidden width of μ.
        out_channels: teacher channels.
        init_pred_var: σ² at initialisation (5.0 as the authors).
        eps: ε, the variance's floor (1e-5 as the authors).
    """

    def __init__(
        self, in_channels: int, mid_channels: int, out_channels: int, init_pred_var: float, eps: float
    ) -> None:
        super().__init__()
        if init_pred_var <= eps:
            raise ValueError(f"init_pred_var must exceed eps ({eps}), got {init_pred_var}")
        self.mean = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid_channels, out_channels, 1, bias=False),
        )
        self.log_scale = nn.Parameter(torch.full((out_channels,), inverse_softplus(init_pred_var - eps)))
        self.eps = eps

    def variance(self) -> Tensor:
        """σ_c² = softplus(α_c) + ε, shape (C_t,)."""
        return F.softplus(self.log_scale) + self.eps

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        """Element-wise −log q(t | s) without the constant, shape of t (after size matching)."""
        s, t = pool_to_smaller(s, t)
        var = self.variance().view(1, -1, 1, 1)
        mu = upcast(self.mean(s))
        return 0.5 * ((mu - upcast(t)) ** 2 / var + torch.log(var))


class VIDLoss(DistillLoss):
    """VID over the selected pairs of tapped maps; returns ``{"vid": weight · Σ_pairs NLL}``.

    Args:
        student_taps: probed student maps (filled in by :class:`kdscene.module.DistillationModule`).
        teacher_taps: probed teacher maps, paired one to one with the student's.
        weight: λ (1 in RepDistiller and the DCT paper's ``config_VID.yaml``; 1.5 on its dev branch).
        select: indices of the tapped pairs to distil (negative allowed); ``None`` = all (module docstring).
        mid_channels: hidden width of every μ; ``None`` = the pair's teacher channels (authors').
        init_pred_var: initial σ² (5.0).
        eps: variance floor ε (1e-5).
        reduction: ``"mean"`` (default, code) or ``"sum"`` (paper), see the module docstring.
    """

    def __init__(
        self,
        student_taps: Sequence[TapInfo],
        teacher_taps: Sequence[TapInfo],
        weight: float = 1.0,
        select: Sequence[int] | None = None,
        mid_channels: int | None = None,
        init_pred_var: float = 5.0,
        eps: float = 1e-5,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(weight)
        if len(student_taps) != len(teacher_taps):
            raise ValueError(
                f"VIDLoss: the student taps {[t.name for t in student_taps]} and the teacher taps "
                f"{[t.name for t in teacher_taps]} must pair up one to one"
            )
        self.reduction = check_choice("VIDLoss", "reduction", reduction, Reduction)
        self.select = select_taps(len(student_taps), select, "VIDLoss")
        self.taps = [(student_taps[i], teacher_taps[i]) for i in self.select]
        self.regressors = nn.ModuleList(
            VIDRegressor(s.channels, mid_channels or t.channels, t.channels, init_pred_var, eps)
            for s, t in self.taps
        )

    def extra_repr(self) -> str:
        return f"weight={self.weight}, select={self.select}, reduction={self.reduction!r}"

    def _reduce(self, nll: Tensor) -> Tensor:
        return nll.mean() if self.reduction == "mean" else nll.sum() / nll.shape[0]

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        check_same_count(student, teacher, "VIDLoss")
        terms = []
        for i, reg, (s_tap, t_tap) in zip(self.select, self.regressors, self.taps):
            s, t = student.maps[i], teacher.maps[i]
            # the 1×1 regressors work at any size (mismatched sizes are pooled): channels only
            check_probed(s, s_tap, "VIDLoss", "student", size=False)
            check_probed(t, t_tap, "VIDLoss", "teacher", size=False)
            terms.append(self._reduce(reg(s, t)))
        return {"vid": self.weight * torch.stack(terms).sum()}
