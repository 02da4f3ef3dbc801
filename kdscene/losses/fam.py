"""Frequency attention for knowledge distillation (FAM-KD).

Pham, Nguyen, Le, Phung, Carneiro, Do, "Frequency Attention for Knowledge Distillation" (WACV 2024,
arXiv 2403.05894); authors' code ``cuong-pv/FAM-KD`` (``distillers/FAM_KD.py``: ``FAM_Module``,
``CROSSATF``, ``FAM_KD``), a fork of mdistiller built on knowledge review (:mod:`kdscene.losses.review`).

FAM module, input x ∈ R^{C_in×H×W} (H, W fixed at construction)::

    X = FFT2(x)                                   (norm "ortho", per channel)
    Y[o,u,v] = Σ_i X[i,u,v] · K[i,o,u,v]          (learnable complex K ∈ C^{C_in×C_out×H×W})
    Y ← HPF(Y)                                    (after fftshift, zero [cy−rh, cy+rh) × [cx−rw, cx+rw),
                                                   cy = H//2, rh = int(cuton·cy); then ifftshift)
    g = Re IFFT2(Y)                               (norm "ortho")
    FAM(x) = γ1·g + γ2·(W_0 x + b_0)              (1×1 convolution with bias; γ1 = γ2 = 0.5 at start)

K starts at (U[0,1) + i·U[0,1)) / (C_in·C_out). It is stored as a real (…, 2) tensor and viewed as
complex in ``forward``, so DDP, optimizers and checkpoints see an ordinary real parameter; the FFT path
runs in float32 with autocast off (cuFFT half precision needs power-of-two sizes; 7, 14, 28, 56 are not).
With the default cuton 0.1, rh = 0 whenever H < 20: no frequency is removed on 7, 8, 14 or 16 px maps.

Fusion level (``CROSSATF``), deepest level first, with mid width m and the teacher's size and width::

    x ← ReLU(BN(Conv1×1(x)))                      (only if the student width ≠ m)
    r ← ReLU(BN(Conv1×1(r)))                      (residual of the deeper level, only if its width ≠ m)
    x ← LocalSelfAttention(x, up(r))              (queries from r; every level but the deepest)
    x ← resize(x, teacher size)                   (nearest, only if sizes differ)
    out = ReLU(BN(FAM(x))),  next residual = x

Loss: weight · Σ_levels MSE(out_l, T_l) with the teacher's post-ReLU maps and its pooled vector as a
1×1 map (no HCL and no logit KD in the authors' FAM-KD). Warm-up ``min(epoch/W, 1)`` (W = 20 on CIFAR,
1 on ImageNet) is :class:`kdscene.callbacks.LossWeightWarmup`.

Paper/code differences and kdscene options (default = authors' code):
- Pooled level (``pooled``): the CIFAR configs supervise it (``"loss"``, default); in the ImageNet
  R34→R18 config ``zip`` silently drops its output, which then only feeds the next level's residual
  (``"residual"``, which also does not build the unused output FAM); ``"off"`` removes the level.
- Filter size (``global_filter``): ``"full"`` is the authors' C_in·C_out·H·W complex filter (51.6M complex
  weights for ImageNet R34→R18, see ``num_filter_weights``); ``"depthwise"`` is a per-channel filter
  K ∈ C^{C_out×H×W} after a bias-free 1×1 projection when C_in ≠ C_out (GFNet-style, Rao et al. 2021),
  initialised (U + iU)/C_out so that the global branch starts at the same scale.
- The HPF's cut-on ratio is ``cuton`` (0.1 in the code); the zeroed block is not centred on DC, so
  the filtered spectrum is not Hermitian and the imaginary part dropped by Re is not zero.
- ``CROSSATF`` builds an unused residual convolution on the deepest level; kdscene does not (state-dict
  keys differ, values do not). Mid widths (``mid_channels``) default to the student's widths, as in
  every authors' config.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscene.features import Features, TapInfo
from kdscene.losses.base import DistillLoss, check_choice, check_same_count, upcast
from kdscene.losses.local_attention import LocalSelfAttention
from kdscene.losses.review import PooledMode, level_losses, review_fuse, review_inputs, review_levels

log = logging.getLogger(__name__)
FilterKind = Literal["full", "depthwise"]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def high_pass_mask(height: int, width: int, cuton: float = 0.1) -> Tensor:
    """(H, W) 0/1 mask in FFT order: 0 on the block the authors zero after an fftshift."""
    cy, cx = height // 2, width // 2
    rh, rw = int(cuton * cy), int(cuton * cx)
    mask = torch.ones(height, width)
    mask[cy - rh : cy + rh, cx - rw : cx + rw] = 0.0
    return torch.fft.ifftshift(mask)


class FAMModule(nn.Module):
    """Frequency attention module: global frequency filter with high-pass, plus a local 1×1 conv.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        size: spatial size (H, W) or H of the input; the filter is built for it.
        cuton: high-pass cut-on ratio (0.1 in the authors' code; 0 disables the high-pass).
        global_filter: ``"full"`` (authors') or ``"depthwise"`` (module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: int | Sequence[int],
        cuton: float = 0.1,
        global_filter: FilterKind = "full",
    ) -> None:
        super().__init__()
        check_choice("FAMModule", "global_filter", global_filter, FilterKind)
        if not 0.0 <= cuton <= 1.0:
            raise ValueError(f"cuton must be in [0, 1], got {cuton}")
        self.size = _pair(size)
        self.global_filter = global_filter
        self.in_channels, self.out_channels = in_channels, out_channels
        self.project = None
        if global_filter == "full":
            shape, scale = (in_channels, out_channels, *self.size), 1.0 / (in_channels * out_channels)
        else:
            shape, scale = (out_channels, *self.size), 1.0 / out_channels
            if in_channels != out_channels:
                self.project = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        # real and imaginary parts, each U[0, 1) · scale; viewed as complex in forward
        self.weight = nn.Parameter(torch.rand(*shape, 2) * scale)
        self.local = nn.Conv2d(in_channels, out_channels, 1)
        self.gamma1 = nn.Parameter(torch.full((1,), 0.5))
        self.gamma2 = nn.Parameter(torch.full((1,), 0.5))
        self.register_buffer("mask", high_pass_mask(*self.size, cuton), persistent=False)

    @property
    def num_filter_weights(self) -> int:
        """Complex weights in the global filter."""
        return self.weight.numel() // 2

    def global_branch(self, x: Tensor) -> Tensor:
        """Re IFFT2(HPF(FFT2(x) · K)) in float32 (float64 stays float64)."""
        dtype = torch.promote_types(upcast(x).dtype, self.weight.dtype)
        x = x.to(dtype)
        if self.project is not None:
            x = F.conv2d(x, self.project.weight.to(dtype))
        spectrum = torch.fft.fft2(x, norm="ortho")
        kernel = torch.view_as_complex(self.weight.to(dtype).contiguous())
        if self.global_filter == "full":
            spectrum = torch.einsum("bihw,iohw->bohw", spectrum, kernel)
        else:
            spectrum = spectrum * kernel
        spectrum = spectrum * self.mask.to(dtype)
        return torch.fft.ifft2(spectrum, norm="ortho").real

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != self.size:
            raise ValueError(
                f"FAMModule expects (B, {self.in_channels}, {self.size[0]}, {self.size[1]}) inputs (its "
                f"filter is built for one size), got {tuple(x.shape)}"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            glob = self.global_branch(x)
        return self.gamma1 * glob + self.gamma2 * self.local(x)

    def extra_repr(self) -> str:
        return f"filter={self.global_filter}, weights={self.num_filter_weights} complex, size={self.size}"


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, 1, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU())


class FAMFusion(nn.Module):
    """One review level of FAM-KD (the authors' ``CROSSATF``; module docstring).

    Args:
        in_channels: student channels of the level.
        mid_channels: width m of the fused feature.
        out_channels: teacher channels; ``None`` builds no output (a level that only passes on its
            residual), so that no parameter is left without a gradient under DDP.
        out_size: teacher (H, W) of the level: the FAM filter's size.
        residual_channels: width of the deeper level's residual; ``None`` for the deepest level.
        cuton: high-pass cut-on ratio of the FAM.
        global_filter: ``"full"`` or ``"depthwise"`` FAM filter.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int | None,
        out_size: int | Sequence[int],
        residual_channels: int | None = None,
        cuton: float = 0.1,
        global_filter: FilterKind = "full",
    ) -> None:
        super().__init__()
        self.out_size = _pair(out_size)
        self.reduce = _conv_bn_relu(in_channels, mid_channels) if in_channels != mid_channels else None
        fuse = residual_channels is not None
        self.residual = (
            _conv_bn_relu(residual_channels, mid_channels)
            if fuse and residual_channels != mid_channels
            else None
        )
        self.attention = LocalSelfAttention(mid_channels) if fuse else None
        self.output = None
        if out_channels:
            fam = FAMModule(mid_channels, out_channels, self.out_size, cuton, global_filter)
            self.output = nn.Sequential(fam, nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x: Tensor, residual: Tensor | None = None) -> tuple[Tensor | None, Tensor]:
        """Return ``(output, fused)``; ``fused`` (before the FAM) is the next level's residual."""
        if self.reduce is not None:
            x = self.reduce(x)
        if self.attention is not None:
            if residual is None:
                raise ValueError("FAMFusion: this level fuses a residual from the deeper level; none given")
            if self.residual is not None:
                residual = self.residual(residual)
            x = self.attention(x, F.interpolate(residual, size=x.shape[-2:], mode="nearest"))
        if tuple(x.shape[-2:]) != self.out_size:
            x = F.interpolate(x, size=self.out_size, mode="nearest")
        return (self.output(x) if self.output is not None else None), x


class FAMKDLoss(DistillLoss):
    """FAM-KD: knowledge review with attention fusion and frequency attention, MSE to the teacher.

    Args:
        student_taps: probed student maps (filled in by :class:`kdscene.module.DistillationModule`).
        teacher_taps: probed teacher maps (post-ReLU), paired one to one with the student's.
        weight: loss weight (1.0 ImageNet R34→R18; 0.8–5.0 on CIFAR pairs).
        mid_channels: fused width per level, shallowest tap first and the pooled level last (the
            authors' ``MID_CHANNELS`` order); ``None`` = the student's widths.
        pooled: ``"loss"`` (default), ``"residual"`` (ImageNet config's effective loss) or ``"off"``.
        cuton: high-pass cut-on ratio (0.1).
        global_filter: ``"full"`` (default, authors') or ``"depthwise"`` (bounded size).
        student_pooled_channels: width of ``Features.pooled``; ``None`` = deepest student tap's.
        teacher_pooled_channels: same for the teacher.

    ``num_parameters`` and ``num_filter_weights`` (complex) are set, and logged, at construction.
    """

    def __init__(
        self,
        student_taps: Sequence[TapInfo],
        teacher_taps: Sequence[TapInfo],
        weight: float = 1.0,
        mid_channels: Sequence[int] | None = None,
        pooled: PooledMode = "loss",
        cuton: float = 0.1,
        global_filter: FilterKind = "full",
        student_pooled_channels: int | None = None,
        teacher_pooled_channels: int | None = None,
    ) -> None:
        super().__init__(weight)
        self.pooled = pooled
        self.levels = review_levels(
            student_taps, teacher_taps, pooled, student_pooled_channels, teacher_pooled_channels, "FAMKDLoss"
        )
        mids = self._mid_widths(mid_channels)
        self.fusions = nn.ModuleList(
            FAMFusion(
                lv.student.channels,
                mids[i],
                lv.teacher.channels if lv.supervised else None,
                lv.teacher.size,
                mids[i - 1] if i > 0 else None,
                cuton,
                global_filter,
            )
            for i, lv in enumerate(self.levels)
        )
        self.num_parameters = sum(p.numel() for p in self.parameters())
        self.num_filter_weights = sum(
            m.num_filter_weights for m in self.modules() if isinstance(m, FAMModule)
        )
        log.info(
            "FAMKDLoss: %d parameters, of which %d complex filter weights (%.1f MB in float32)",
            self.num_parameters,
            self.num_filter_weights,
            self.num_parameters * 4 / 2**20,
        )

    def _mid_widths(self, mid_channels: Sequence[int] | None) -> list[int]:
        """Mid widths deepest first."""
        if mid_channels is None:
            return [lv.student.channels for lv in self.levels]
        if len(mid_channels) != len(self.levels):
            raise ValueError(
                f"mid_channels has {len(mid_channels)} entries but there are {len(self.levels)} levels "
                "(the taps, shallowest first, then the pooled level unless pooled='off')"
            )
        return [int(m) for m in reversed(mid_channels)]

    def fuse(self, student: Features) -> list[Tensor | None]:
        """The output of every level, deepest first (``None`` for an unsupervised level)."""
        return review_fuse(self.levels, self.fusions, review_inputs(student, self.pooled), "FAMKDLoss")

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        check_same_count(student, teacher, "FAMKDLoss")
        teacher_inputs = review_inputs(teacher, self.pooled)
        total = level_losses(self.fuse(student), teacher_inputs, self.levels, F.mse_loss, "FAMKDLoss")
        return {"fam": self.weight * total}

    def extra_repr(self) -> str:
        return f"weight={self.weight}, pooled={self.pooled!r}, filter_weights={self.num_filter_weights}"
