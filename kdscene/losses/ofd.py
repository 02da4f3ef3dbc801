"""Overhaul of feature distillation (OFD).

Heo, Kim, Yun, Park, Kwak, Choi, "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019, arXiv
1904.01866). Authors' code: ``clovaai/overhaul-distillation`` (``ImageNet/distiller.py``,
``CIFAR-100/distiller.py`` and their ``train_with_distillation.py``); mdistiller's ``distillers/OFD.py``
ports it.

The teacher's features are taken *before* the ReLU (kdscene's ``":pre"`` taps) so that the student also
learns the negative responses, which the ReLU would erase, but only as far as they matter:

- Margin ReLU of the teacher: T = max(F_T, m), with one margin per channel, the expectation of the
  channel's negative responses. Modelling the pre-ReLU response as x ~ N(μ, σ²)::

      m = E[x | x < 0] = μ − σ · φ(μ/σ) / Φ(−μ/σ)

  with φ, Φ the standard normal density and distribution. The code reads μ and σ from the BatchNorm that
  feeds the block's last ReLU (μ = its bias β, σ = |its weight γ|) and uses m = −3σ when Φ(−μ/σ) ≤ 0.001;
  kdscene does both, and takes m = min(μ, 0) for σ = 0 (the limit; the code would divide by zero).
- Connector on the student: 1×1 convolution (no bias) to the teacher's channels, then BatchNorm, initialised
  as the code (weights N(0, 2/(k²·C_T)), BN weight 1, bias 0); trained with the student.
- Partial L2 distance, element-wise between S = connector(F_S) and T::

      d_p(T, S) = Σ_i { 0 if S_i ≤ T_i ≤ 0;  (T_i − S_i)² otherwise }

- Loss: L_OFD = Σ_l w_l · d_p(T_l, S_l) / B, summed over every element and divided by the batch size,
  with the code's level weights w_l = 1 / 2^(n−l) (l = 1..n over the n distilled pairs: the deepest pair
  has weight 1, each shallower one half the next); the training script multiplies it by 1e-4 (ImageNet)
  or 1e-3 (CIFAR-100), the ``weight`` here. (mdistiller: the same sum, its ``.mean(0).sum()``, and
  ``FEAT_WEIGHT`` 1e-3 / 1e-4.) The level weights are the code's; the paper's text was not checked for them.

Where the authors differ from kdscene:

- Teacher BN mode. The authors keep the teacher in *train* mode (``d_net.t_net.train()``: BatchNorm uses the
  batch's statistics, so each pre-ReLU channel really has mean β and standard deviation |γ| before the
  residual add; their issue #37 and the paper's Table 8 say this distilled better). kdscene's teacher is
  always in eval mode (running statistics, the same network at every step): the margins are the same, the
  teacher's features are those of the frozen network. There is no option for this.
- The margin ignores the residual that is added to the BatchNorm's output before the ReLU, as the code does.
- Sizes: the clovaai code needs equal sizes; mdistiller adaptive-average-pools the teacher's map to the
  student's (H, W), which kdscene does when they differ.

Layers and taps: the code distils the pre-ReLU output of every stage (``layer1``..``layer4`` of the ImageNet
ResNets; mdistiller ``preact_feats[1:]``), for teacher and student alike. ``conf/distill/ofd.yaml`` sets
``teacher_layers`` / ``student_layers`` to ``layerN:pre``. Every teacher tap used must be a ``":pre"`` tap of
a residual block whose last BatchNorm feeds the ReLU (torchvision/timm/kdscene ``BasicBlock``: ``bn2``;
``Bottleneck``: ``bn3``); for a stage the last block is used. Student taps may be of any kind (a student
without ``:pre`` taps, such as MobileNetV2, gives its maps as they are). ``select`` picks pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscene.features import PREACT_SUFFIX, Features, TapInfo, resolve_preact
from kdscene.losses.base import DistillLoss, check_probed, check_same_count, select_taps, upcast

TAIL_LIMIT = 0.001  # Φ(−μ/σ) at or below which the code uses m = −3σ


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gaussian_margin(mean: float, std: float) -> float:
    """m = E[x | x < 0] for x ~ N(mean, std²), with the code's −3·std for a negligible negative tail."""
    std = abs(std)
    if std == 0.0:
        return min(mean, 0.0)
    tail = _normal_cdf(-mean / std)
    if tail <= TAIL_LIMIT:
        return -3.0 * std
    density = math.exp(-0.5 * (mean / std) ** 2) / math.sqrt(2.0 * math.pi)
    return mean - std * density / tail


def ofd_margin(bn: nn.BatchNorm2d) -> Tensor:
    """Per-channel margins from a BatchNorm's affine parameters (μ = bias, σ = |weight|), shape (C,)."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.weight is None or bn.bias is None:
        raise ValueError(f"OFDLoss: the margin needs an affine BatchNorm, got {type(bn).__name__}")
    pairs = zip(bn.bias.detach().double().tolist(), bn.weight.detach().double().tolist())
    return torch.tensor([gaussian_margin(mu, sigma) for mu, sigma in pairs], dtype=torch.float32)


def partial_l2(student: Tensor, target: Tensor, margin: Tensor) -> Tensor:
    """Σ of the partial L2 distance between S and T = max(F_T, m), divided by the batch size.

    Args:
        student: S, (B, C, H, W), the connector's output.
        target: F_T, the teacher's pre-ReLU map, same shape.
        margin: m, (C,).

    Returns:
        Σ_i [S_i > T_i or T_i > 0] · (S_i − T_i)² / B.
    """
    s, t = upcast(student), upcast(target)
    t = torch.maximum(t, margin.to(t).view(1, -1, 1, 1))
    keep = (s > t) | (t > 0)
    return ((s - t).pow(2) * keep).sum() / s.shape[0]


def block_bn(teacher: nn.Module, tap: str) -> nn.BatchNorm2d:
    """The BatchNorm feeding the final ReLU of the residual block tapped by ``tap`` (``"<path>:pre"``)."""
    if not tap.endswith(PREACT_SUFFIX):
        raise ValueError(
            f"OFDLoss: the teacher tap {tap!r} is not a pre-activation tap; OFD distils the teacher's "
            f"values before the ReLU: tap '{tap}{PREACT_SUFFIX}' (distill.teacher_layers in the config)"
        )
    block, _ = resolve_preact(teacher, tap)
    for name in ("bn3", "bn2"):  # Bottleneck, then BasicBlock
        bn = getattr(block, name, None)
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            return bn
    raise ValueError(
        f"OFDLoss: the teacher block {type(block).__name__} of tap {tap!r} has neither `bn3` (Bottleneck) "
        "nor `bn2` (BasicBlock), the BatchNorm whose statistics give the margin"
    )


def ofd_connector(in_channels: int, out_channels: int) -> nn.Sequential:
    """1×1 convolution (no bias) + BatchNorm, initialised as the authors' code."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / out_channels))
    bn = nn.BatchNorm2d(out_channels)
    return nn.Sequential(conv, bn)


class OFDLoss(DistillLoss):
    """OFD over the selected pairs of tapped maps; returns ``{"ofd": weight · Σ_l w_l · d_p / B}``.

    Args:
        student_taps: probed student maps (filled in by :class:`kdscene.module.DistillationModule`).
        teacher_taps: probed teacher maps (``":pre"`` taps), paired one to one with the student's.
        teacher_network: the frozen teacher, whose BatchNorms give the margins (filled in by the module).
        weight: the code's factor on Σ d_p / B: 1e-4 for ImageNet (default), 1e-3 for CIFAR-100.
        select: indices of the tapped pairs to distil (negative allowed); ``None`` (default) = all.
    """

    functional: ClassVar[str] = "partial_l2"

    def __init__(
        self,
        student_taps: Sequence[TapInfo],
        teacher_taps: Sequence[TapInfo],
        teacher_network: nn.Module | None = None,
        weight: float = 1e-4,
        select: Sequence[int] | None = None,
    ) -> None:
        super().__init__(weight)
        if len(student_taps) != len(teacher_taps):
            raise ValueError(
                f"OFDLoss: the student taps {[t.name for t in student_taps]} and the teacher taps "
                f"{[t.name for t in teacher_taps]} must pair up one to one"
            )
        if teacher_network is None:
            raise ValueError(
                "OFDLoss needs teacher_network (its BatchNorms give the margins); the module passes it"
            )
        self.select = select_taps(len(student_taps), select, "OFDLoss")
        self.taps = [(student_taps[i], teacher_taps[i]) for i in self.select]
        self.connectors = nn.ModuleList(ofd_connector(s.channels, t.channels) for s, t in self.taps)
        for n, (_, t) in enumerate(self.taps):
            margin = ofd_margin(block_bn(teacher_network, t.name))
            if margin.numel() != t.channels:
                raise ValueError(
                    f"OFDLoss: tap {t.name!r} has {t.channels} channels, its BatchNorm {margin.numel()}"
                )
            self.register_buffer(f"margin{n}", margin)
        count = len(self.select)
        self.level_weights = [1.0 / 2 ** (count - 1 - n) for n in range(count)]

    def margins(self) -> list[Tensor]:
        """The per-channel margins of the selected pairs, in order."""
        return [getattr(self, f"margin{n}") for n in range(len(self.select))]

    def extra_repr(self) -> str:
        return f"weight={self.weight}, select={self.select}, level_weights={self.level_weights}"

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        check_same_count(student, teacher, "OFDLoss")
        total = 0.0
        for n, i in enumerate(self.select):
            s_tap, t_tap = self.taps[n]
            s, t = student.maps[i], teacher.maps[i]
            check_probed(s, s_tap, "OFDLoss", "student", size=False)  # the 1×1 connector works at any size
            check_probed(t, t_tap, "OFDLoss", "teacher", size=False)
            s = self.connectors[n](s)
            if t.shape[-2:] != s.shape[-2:]:
                t = F.adaptive_avg_pool2d(t, s.shape[-2:])  # mdistiller's rule
            total = total + self.level_weights[n] * partial_l2(s, t, self.margins()[n])
        return {"ofd": self.weight * total}
