"""FitNets: hint-based training.

Romero, Ballas, Kahou, Chassang, Gatta, Bengio, "FitNets: Hints for Thin Deep Nets" (ICLR 2015,
arXiv 1412.6550). Port used as the reference implementation: RepDistiller (``distiller_zoo/FitNet.py``
``HintLoss``, ``models/util.py`` ``ConvReg``, ``train_student.py --distill hint``).

A hint is the output u_h of a teacher layer; the student's guided layer v_g is mapped to the hint's shape
by a regressor r and pulled towards it. Paper, Eq. 3::

    L_HT(W_Guided, W_r) = ½ ‖ u_h(x; W_Hint) − r(v_g(x; W_Guided); W_r) ‖²

with a convolutional regressor whose kernel is (H_g − H_h + 1) × (W_g − W_h + 1) (a "valid" convolution
from the guided size to the hint size) and the same non-linearity as the hint (ReLU for kdscene's
post-ReLU stage taps). The paper trains in two stages: (1) the student up to the guided layer and the
regressor with L_HT alone, then (2) the whole student with Hinton KD.

RepDistiller, and most comparisons since (SemCKD, CRD tables), train in one stage: CE + β·MSE(r(v_g), u_h)
with β = 100 and the mean over all elements, from the start, with its ``ConvReg`` regressor:

- guided size = 2 × hint size: 3×3 convolution, stride 2, padding 1;
- guided size = ½ × hint size: 4×4 transposed convolution, stride 2, padding 1;
- otherwise guided ≥ hint: a valid convolution of kernel (H_g − H_h + 1) × (W_g − W_h + 1);
  a guided map smaller than the hint (other than ½) is refused;
- followed by BatchNorm and ReLU. The convolutions keep PyTorch's default bias and initialisation.

``mode="code"`` (default) is RepDistiller's regressor and MSE mean; ``mode="paper"`` the valid convolution
+ ReLU (no BatchNorm) and ½ × the squared error summed over C, H, W, averaged over the batch; it needs a
guided map at least as large as the hint. The two-stage schedule is not a loss option: run it with the
stages runner (:mod:`kdscene.cli.recipe`), stage 1 with this term alone (the student's layers after the
guided one get no gradient, so SGD leaves them untouched; under DDP set
``strategy=ddp_find_unused_parameters_true``), stage 2 with ``student_checkpoint: ${kdscene.stage:<stage 1>}``
and CE + KD terms. ``conf/distill/fitnet.yaml`` is the single-stage RepDistiller recipe. A sketch::

    stages:
      hint:
        max_epochs: 30
        terms: {hint: {_target_: kdscene.losses.FitNetLoss, _partial_: true, weight: 1.0, mode: paper}}
      kd:
        student_checkpoint: ${kdscene.stage:hint}
        terms: {ce: {...}, kd: {_target_: kdscene.losses.KDLoss, _partial_: true}}

Layers: ``select`` (the guided student tap) and ``teacher_select`` (the hint tap; ``None`` = the same
index) are one index each into the tapped maps. RepDistiller's default ``--hint_layer 2`` of (stem,
stage 1, stage 2, stage 3, pooled) of its CIFAR ResNets is the second stage; ``select=1`` is the same
tap in kdscene (layer2, for three-stage CIFAR and four-stage ImageNet ResNets alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from kdscene.features import Features, TapInfo
from kdscene.losses.base import DistillLoss, check_choice, check_probed, select_taps, teacher_choice, upcast

FitNetMode = Literal["code", "paper"]


def _valid_conv(s: TapInfo, t: TapInfo) -> nn.Conv2d:
    (sh, sw), (th, tw) = s.size, t.size
    return nn.Conv2d(s.channels, t.channels, kernel_size=(1 + sh - th, 1 + sw - tw))


def hint_regressor(s: TapInfo, t: TapInfo, mode: FitNetMode = "code") -> nn.Sequential:
    """The regressor from guided tap ``s`` to hint tap ``t`` (module docstring), as a ``Sequential``."""
    (sh, sw), (th, tw) = s.size, t.size
    strided = mode == "code" and (sh == 2 * th or 2 * sh == th)
    if not strided and (sh < th or sw < tw):
        raise ValueError(
            f"FitNetLoss(mode={mode!r}): the guided map {s.name!r} is {tuple(s.size)} but the hint "
            f"{t.name!r} is {tuple(t.size)}; the regressor maps a larger map (or, in mode 'code', one of "
            "half the hint's size) to the hint's size"
        )
    if mode == "paper":
        return nn.Sequential(_valid_conv(s, t), nn.ReLU())
    if sh == 2 * th:
        conv = nn.Conv2d(s.channels, t.channels, kernel_size=3, stride=2, padding=1)
    elif 2 * sh == th:
        conv = nn.ConvTranspose2d(s.channels, t.channels, kernel_size=4, stride=2, padding=1)
    else:
        conv = _valid_conv(s, t)
    return nn.Sequential(conv, nn.BatchNorm2d(t.channels), nn.ReLU())


def _one_tap(taps: Sequence[TapInfo], index: int, name: str) -> int:
    """The non-negative index of one tap (FitNet guides one layer by one hint)."""
    if not isinstance(index, int):
        raise TypeError(f"FitNetLoss: {name} is one tap index, got {index!r}")
    return select_taps(len(taps), index, "FitNetLoss", name)[0]


class FitNetLoss(DistillLoss):
    """Hint loss between one student tap (through a regressor) and one teacher tap; ``{"hint": ...}``.

    Args:
        student_taps: probed student maps (filled in by :class:`kdscene.module.DistillationModule`).
        teacher_taps: probed teacher maps.
        weight: β (100 in RepDistiller's and SemCKD's scripts).
        select: index of the guided student tap (1: layer2 of kdscene's ResNet presets; negative allowed).
        teacher_select: index of the hint tap; ``None`` = ``select``.
        mode: ``"code"`` (default, RepDistiller) or ``"paper"`` (Eq. 3), see the module docstring.
    """

    def __init__(
        self,
        student_taps: Sequence[TapInfo],
        teacher_taps: Sequence[TapInfo],
        weight: float = 100.0,
        select: int = 1,
        teacher_select: int | None = None,
        mode: FitNetMode = "code",
    ) -> None:
        super().__init__(weight)
        self.mode = check_choice("FitNetLoss", "mode", mode, FitNetMode)
        self.select = _one_tap(student_taps, select, "select")
        self.teacher_select = _one_tap(teacher_taps, *teacher_choice(select, teacher_select))
        self.guided = student_taps[self.select]
        self.hint = teacher_taps[self.teacher_select]
        self.regressor = hint_regressor(self.guided, self.hint, mode)

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, guided={self.guided.name!r}, hint={self.hint.name!r}, mode={self.mode!r}"
        )

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        s, t = student.maps[self.select], teacher.maps[self.teacher_select]
        check_probed(s, self.guided, "FitNetLoss", "student")  # the regressor is built for one size
        check_probed(t, self.hint, "FitNetLoss", "teacher")
        pred, target = upcast(self.regressor(s)), upcast(t)
        if pred.shape != target.shape:  # a non-square map whose two sides need different regressors
            raise ValueError(
                f"FitNetLoss: the regressor gives {tuple(pred.shape)}, the hint is {tuple(target.shape)}"
            )
        if self.mode == "code":
            loss = F.mse_loss(pred, target)
        else:
            loss = 0.5 * (pred - target).pow(2).sum() / pred.shape[0]
        return {"hint": self.weight * loss}
