"""DCT-driven attention distillation (DCT-KD).

López-Cifuentes, Escudero-Viñolo, Bescós, SanMiguel, "Impact of a DCT-driven Loss in Attention-based
Knowledge-Distillation for Scene Recognition" (arXiv 2205.01997; IEEE TCSVT 2023 as "Attention-Based
Knowledge Distillation in Scene Recognition: The Impact of a DCT-Driven Loss"). Authors' code:
github.com/alexlopezcifuentes/Distillation-Attention, ``Distillation Zoo/DFTOurs.py`` (loss) and
``Distillation.py`` (teacher guidance, batch mean).

Paper (method as described; the full camera-ready text was not at hand): for each tapped scale l the
activation map of a feature F ∈ R^{C×H×W} is

    A_l(h, w) = (1/C) · Σ_c F_c(h, w)²,

min-max normalised; its 2-D DCT spectrum 𝒟(A_l) is normalised again, and student and teacher are
compared with a Euclidean distance summed over the L scales:

    L_DCT = (1/B) · Σ_b m_b · Σ_l ‖ vec 𝒟̂(A_l^S) − vec 𝒟̂(A_l^T) ‖₂,   m_b = 1[argmax z_T = y_b],

with total loss β·CE + α·L_DCT (+ δ·KD(T=4)): "DCT" uses β=α=1, δ=0; "DCT + KD" β=0.1, α=δ=1.

What the authors' code computes, and how this module selects it:

* **It is not a DCT.** The code takes the real part of the *unnormalised 2-D DFT* of the centred map
  (comment: "DCT = abs(real(DFT))"); about half of those coefficients are duplicates (D(u,v) =
  D(−u,−v)). ``variant="submission"`` (default; commit 6726ee9, the 2022 dev branch, and what produced
  the README tables) uses D = |Re DFT| and normalises both maps as (x − min)/max.
  ``variant="final"`` (main HEAD 3d70d15) uses D = Re DFT (no abs) and (x − min)/(max − min).
  ``variant="dct2"`` (not in the code; what the title promises) is "final" with an orthonormal 2-D
  DCT-II instead of Re DFT.
* **Centring.** The normalised activation map is centred (spatial mean subtracted) before the
  transform, so the DC coefficient is 0. All H·W coefficients are used: no low-frequency crop.
  Consequence: with ``eps=0`` the activation-map normalisation changes nothing but where NaNs
  appear (its offset is removed by the centring, its scale by the spectrum's normalisation);
  the variants' values differ only through the transform and the spectrum normalisation.
* **Distance.** Plain, non-squared L2 norm per scale, summed with weight 1 over scales; it grows with
  √(H·W), so the largest scale dominates.
* **Teacher guidance** (``pred_guide=True``, the code's default ``PRED_GUIDE: True``) zeroes the samples
  the teacher misclassifies, then averages over the *whole* batch (zeros included), as the code does.
* **No epsilon.** A constant map gives 0/0 = NaN in the code; ``eps=0`` (default) reproduces that,
  ``eps > 0`` is added to every normalisation denominator. A NaN sample is multiplied by its mask like
  in the code, so it propagates even when masked out.
* **Scales.** The code uses the four stage outputs (the pooled vector it also returns is dropped);
  ``select=None`` (default) uses every tapped map, ``select=[2, 3]`` reproduces the code's commented
  MIT transfer setting. Spatial sizes must match per scale (the code never resizes); channel counts
  may differ.
* **Numerics** (no effect on values beyond float rounding): the channel pooling reads F once and
  makes no full-size F² temporary (``vector_norm(F, dim=1)²/C``, autocast off, so bf16 features are
  read as they are and only the norm is rounded to bf16; on CPU with NCHW inputs, channel-chunked
  sums of squares, which measured faster there), with a hand-written backward (2/C)·F; everything
  after the pooling runs in float32 with autocast off. ``aminmax`` splits the gradient between tied
  extrema where the code's ``torch.min`` picks one; the distance's gradient is 0 instead of NaN when
  student and teacher maps are identical. ``backend`` (kdscene's option) only changes speed.
* **Teacher cache.** The loss reads the teacher's features only through A_l^T (and the logits for the
  guidance), so a teacher cache (:mod:`kdscene.cache`) that holds A_l^T (``Features.energy``) gives
  the same loss up to the cache's fp16 rounding of A_l^T.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import ClassVar, Literal

import torch
from torch import Tensor

from kdscene.features import Features, TapInfo
from kdscene.losses.base import (
    DistillLoss,
    as_select,
    check_choice,
    check_same_count,
    require_logits,
    select_taps,
    upcast,
)

Variant = Literal["submission", "final", "dct2"]
Backend = Literal["auto", "matmul", "fft", "torch_dct"]
_CPU_CHUNK = 64  # channels per partial sum on CPU (bounds the F² temporary; measured fastest)


def _sum_of_squares(fmap: Tensor) -> Tensor:
    """Σ_c F_c² without a full-size F² temporary, accumulated in float32 (float64 stays)."""
    if fmap.device.type == "cpu" and not fmap.is_contiguous(memory_format=torch.channels_last):
        # CPU's norm kernel is slow over the strided channel dim of NCHW: partial sums instead.
        return sum(upcast(c).square().sum(dim=1) for c in fmap.split(_CPU_CHUNK, dim=1))
    with torch.autocast(device_type=fmap.device.type, enabled=False):
        return upcast(torch.linalg.vector_norm(fmap, dim=1)).square()


class _ChannelEnergy(torch.autograd.Function):
    """A = (1/C)·Σ_c F_c², with the one-multiplication gradient ∂A/∂F = (2/C)·F."""

    @staticmethod
    def forward(ctx, fmap: Tensor) -> Tensor:
        ctx.save_for_backward(fmap)
        return _sum_of_squares(fmap) / fmap.shape[1]

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (fmap,) = ctx.saved_tensors
        scale = (grad * (2.0 / fmap.shape[1])).to(fmap.dtype).unsqueeze(1)
        return fmap * scale


def channel_energy(fmap: Tensor) -> Tensor:
    """A = (1/C)·Σ_c F_c²: (B, C, H, W) -> (B, H, W), float32 (float64 stays float64).

    The pooling, not the transform, dominates the loss's cost, so it reads F once: one fused
    reduction (``vector_norm`` over channels, squared; autocast off so bf16 features are not first
    copied to float32), and a backward that is one multiplication instead of autograd's chain.
    """
    return _ChannelEnergy.apply(fmap)


def _minmax(x: Tensor, submission: bool, eps: float) -> Tensor:
    """Per-sample (x − min)/max ("submission") or (x − min)/(max − min) over the last two dims."""
    lo, hi = torch.aminmax(x.flatten(-2), dim=-1)
    lo, hi = lo[..., None, None], hi[..., None, None]
    den = hi if submission else hi - lo
    return (x - lo) / (den + eps) if eps else (x - lo) / den


def _basis_1d(kind: str, n: int) -> Tensor:
    """Stacked float64 1-D bases (k, n, n) with the 2-D transform Σ_k K_H[k] Z K_W[k]ᵀ.

    ``"dft_rows"``: [cos, sin] and ``"dft_cols"``: [cos, −sin] of 2π·u·h/n, because
    Re(F_H Z F_Wᵀ) = C_H Z C_Wᵀ − S_H Z S_Wᵀ. ``"dct"``: the orthonormal DCT-II matrix.
    Phases are reduced modulo the period in integers first, so large n loses no accuracy.
    """
    u = torch.arange(n, dtype=torch.int64)
    if kind == "dct":
        ang = math.pi * (((2 * u[None, :] + 1) * u[:, None]) % (4 * n)).double() / (2 * n)
        scale = torch.full((n, 1), math.sqrt(2.0 / n), dtype=torch.float64)
        scale[0] = math.sqrt(1.0 / n)
        return (scale * torch.cos(ang))[None]
    ang = 2 * math.pi * ((u[:, None] * u[None, :]) % n).double() / n
    sign = 1.0 if kind == "dft_rows" else -1.0
    return torch.stack([torch.cos(ang), sign * torch.sin(ang)])


@lru_cache(maxsize=64)
def _factors(dct: bool, h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Cached (left (H, k·H), right (W, k·W)) so that the transform is left · blocks(Z · right)."""
    kh = _basis_1d("dct" if dct else "dft_rows", h)
    kw = _basis_1d("dct" if dct else "dft_cols", w)
    left = kh.permute(1, 0, 2).reshape(h, -1)
    right = kw.transpose(-1, -2).permute(1, 0, 2).reshape(w, -1)
    return left.to(device=device, dtype=dtype), right.to(device=device, dtype=dtype)


def _transform_matmul(z: Tensor, dct: bool) -> Tensor:
    """Σ_k K_H[k] Z K_W[k]ᵀ as two GEMMs: one (N·H, W) @ (W, k·W), one (H, k·H) @ (N, k·H, W)."""
    n, h, w = z.shape
    left, right = _factors(dct, h, w, z.device, z.dtype)
    k = right.shape[1] // w
    y = (z @ right).view(n, h, k, w).transpose(1, 2).reshape(n, k * h, w)
    return left @ y


def _dct_fft_1d(x: Tensor) -> Tensor:
    """Orthonormal DCT-II along the last dim with one FFT (Makhoul's even/odd reordering)."""
    n = x.shape[-1]
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], dim=-1)
    k = torch.arange(n, device=x.device, dtype=x.dtype)
    twiddle = torch.polar(torch.ones_like(k), -math.pi * k / (2 * n))
    y = (torch.fft.fft(v, dim=-1) * twiddle).real
    scale = torch.full_like(k, math.sqrt(2.0 / n))
    scale[0] = math.sqrt(1.0 / n)
    return y * scale


def spectrum_2d(z: Tensor, kind: Literal["re_dft", "dct2"], backend: Backend = "auto") -> Tensor:
    """2-D transform of (N, H, W) maps over the last two dims.

    Args:
        z: real maps, float32 or float64.
        kind: ``"re_dft"``, the real part of the unnormalised DFT, D(u,v) = Σ_{h,w} z(h,w)·
            cos(2π(uh/H + vw/W)) (the authors' "DCT"); or ``"dct2"``, the orthonormal DCT-II
            (``scipy.fft.dctn(type=2, norm="ortho")``).
        backend: ``"matmul"``, ``"fft"``, ``"torch_dct"`` (``"dct2"`` only) or ``"auto"``.
    """
    dct = kind == "dct2"
    if backend == "auto":
        backend = "matmul" if dct else "fft"
    if backend == "matmul":
        return _transform_matmul(z, dct)
    if backend == "torch_dct":
        if not dct:
            raise ValueError("backend='torch_dct' computes only the DCT-II (kind='dct2')")
        try:
            import torch_dct  # the reference implementation; only needed for this backend
        except ImportError as err:
            raise ImportError("backend='torch_dct' needs torch-dct: pip install torch-dct") from err
        return torch_dct.dct_2d(z, norm="ortho")
    if dct:
        return _dct_fft_1d(_dct_fft_1d(z).transpose(-1, -2)).transpose(-1, -2)
    return torch.fft.fft2(z).real


def frequency_from_energy(
    energy: Tensor, variant: Variant = "submission", eps: float = 0.0, backend: Backend = "auto"
) -> Tensor:
    """Normalised frequency map D̂ of activation maps A (N, H, W); see the module docstring."""
    submission = variant == "submission"
    with torch.autocast(device_type=energy.device.type, enabled=False):
        a = _minmax(upcast(energy), submission, eps)
        z = a - a.mean(dim=(-2, -1), keepdim=True)
        d = spectrum_2d(z, "dct2" if variant == "dct2" else "re_dft", backend)
        if submission:
            d = d.abs()
        return _minmax(d, submission, eps)


def dct_frequency_map(
    fmap: Tensor, variant: Variant = "submission", eps: float = 0.0, backend: Backend = "auto"
) -> Tensor:
    """Normalised frequency map D̂ of a feature map, (B, C, H, W) -> (B, H, W), for visualisation.

    Args:
        fmap: feature map (any memory format, any float dtype).
        variant: ``"submission"``, ``"final"`` or ``"dct2"`` (module docstring).
        eps: added to the normalisation denominators (0 = the authors' exact formula).
        backend: ``"auto"`` (default), ``"matmul"``, ``"fft"`` or ``"torch_dct"`` (see
            :class:`DCTAttentionLoss`).
    """
    _check_options(variant, backend, eps, "dct_frequency_map")
    return frequency_from_energy(channel_energy(fmap), variant, eps, backend)


def _check_options(variant: str, backend: str, eps: float, owner: str) -> None:
    check_choice(owner, "variant", variant, Variant)
    check_choice(owner, "backend", backend, Backend)
    if backend == "torch_dct" and variant != "dct2":
        raise ValueError(
            f"backend='torch_dct' only computes a DCT-II (variant='dct2'); variant {variant!r} uses "
            "Re(DFT): choose backend='matmul' or 'fft'"
        )
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def teacher_correct(teacher_logits: Tensor, labels: Tensor) -> Tensor:
    """m_b = 1[argmax z_T = y_b] as a float mask of shape (B,)."""
    return (teacher_logits.argmax(dim=1) == labels).to(torch.float32)


class DCTAttentionLoss(DistillLoss):
    """DCT-driven attention loss over the tapped scales; returns ``{"dct": weight · L_DCT}``.

    Args:
        weight: α (1 in both the "DCT" and "DCT + KD" settings of the paper).
        variant: ``"submission"`` (default; README tables), ``"final"`` (main HEAD) or ``"dct2"``
            (true orthonormal DCT-II); see the module docstring.
        pred_guide: zero the samples the teacher misclassifies (code default True).
        eps: added to every normalisation denominator; 0 (default) reproduces the code, NaN on a
            constant map included.
        select: indices of the tapped maps to use (negative allowed); None = all.
        student_taps, teacher_taps: the probed taps (filled in by
            :class:`~kdscene.module.DistillationModule`; optional). With them, a configuration that is
            wrong by construction is refused at once instead of at the first batch: paired maps of
            different sizes, and a 1×1 map with ``eps=0``, whose min-max normalisation is 0/0, so
            that the loss would be NaN from the first step (the authors' code behaves the same).
        backend: how the transform is computed. ``"matmul"``: cached basis matrices per
            (H, W, device, dtype), two GEMMs; it follows torch's float32 matmul precision (TF32 when
            enabled). ``"fft"``: ``torch.fft`` (the DCT-II by Makhoul's one-FFT algorithm).
            ``"torch_dct"``: ``torch_dct.dct_2d(norm="ortho")``, ``variant="dct2"`` only.
            ``"auto"`` (default): what measured fastest for the transform alone on the ResNet
            shapes (CPU; no GPU was at hand): ``"fft"`` for the Re DFT variants, ``"matmul"`` for
            ``"dct2"``. At the level of the whole loss the backends are within timing noise.
    """

    functional: ClassVar[str] = "dct_frequency_map"
    cache_fields: ClassVar[tuple[str, ...]] = ("energy", "logits")

    def __init__(
        self,
        weight: float = 1.0,
        variant: Variant = "submission",
        pred_guide: bool = True,
        eps: float = 0.0,
        select: Sequence[int] | None = None,
        backend: Backend = "auto",
        *,
        student_taps: Sequence[TapInfo] | None = None,
        teacher_taps: Sequence[TapInfo] | None = None,
    ) -> None:
        super().__init__(weight)
        _check_options(variant, backend, eps, "DCTAttentionLoss")
        self.variant = variant
        self.pred_guide = bool(pred_guide)
        self.eps = float(eps)
        self.select = as_select(select, "DCTAttentionLoss")
        self.backend = backend
        if student_taps is not None and teacher_taps is not None:
            self._check_taps(student_taps, teacher_taps)

    def _check_taps(self, student_taps: Sequence[TapInfo], teacher_taps: Sequence[TapInfo]) -> None:
        """Refuse pairs of unequal size, and 1×1 maps with ``eps=0`` (NaN by construction)."""
        if len(student_taps) != len(teacher_taps):
            return  # forward names the mismatch with the maps at hand
        for i in select_taps(len(student_taps), self.select, "DCTAttentionLoss"):
            s, t = student_taps[i], teacher_taps[i]
            if tuple(s.size) != tuple(t.size):
                raise ValueError(
                    f"DCTAttentionLoss: tap {i} is {tuple(s.size)} in the student ({s.name!r}) but "
                    f"{tuple(t.size)} in the teacher ({t.name!r}); the spectra are compared coefficient "
                    "by coefficient and need equal spatial sizes: tap other layers or select other taps"
                )
            if self.eps == 0 and s.size[0] * s.size[1] == 1:
                raise ValueError(
                    f"DCTAttentionLoss: tap {i} ({s.name!r}) is 1x1 at this input size, so its attention "
                    "map is constant and the loss's min-max normalisation is 0/0 = NaN with eps=0 (the "
                    "authors' code does the same). Set eps > 0 (e.g. distill.terms.dct.eps=1e-8), leave "
                    "the tap out (distill.terms.dct.select=[...]) or use larger images"
                )

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, variant={self.variant!r}, pred_guide={self.pred_guide}, "
            f"eps={self.eps}, select={self.select}, backend={self.backend!r}"
        )

    def _scale_distance(self, s: Tensor, t: Tensor, index: int, name: str) -> Tensor:
        """Per-sample ‖D̂_S − D̂_T‖₂ at one scale, shape (B,); ``t`` is the teacher's map or its energy."""
        if s.shape[0] != t.shape[0]:
            raise ValueError(
                f"DCTAttentionLoss: scale {index} ({name!r}): student batch {s.shape[0]} != teacher "
                f"batch {t.shape[0]}"
            )
        if s.shape[-2:] != t.shape[-2:]:
            raise ValueError(
                f"DCTAttentionLoss: scale {index} ({name!r}): the student map is {tuple(s.shape[-2:])} "
                f"but the teacher's is {tuple(t.shape[-2:])}; the DCT loss compares spectra "
                "coefficient by coefficient and needs equal spatial sizes (channels may differ)"
            )
        # Student and teacher share one normalise/transform pass: half the kernel launches.
        es, et = channel_energy(s), channel_energy(t) if t.dim() == 4 else t  # 3-d: cached energy
        freq = frequency_from_energy(torch.cat([es, et.to(es.dtype)]), self.variant, self.eps, self.backend)
        fs, ft = freq.split(s.shape[0])
        return torch.linalg.vector_norm((fs - ft).flatten(1), dim=1)

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        check_same_count(student, teacher, "DCTAttentionLoss")
        targets = teacher.maps or teacher.energy  # maps from the live teacher, energy from a cache
        per_sample = sum(
            self._scale_distance(student.maps[i], targets[i], i, student.names[i])
            for i in select_taps(len(student.maps), self.select, "DCTAttentionLoss")
        )
        if self.pred_guide:
            if labels is None:
                raise ValueError("DCTAttentionLoss(pred_guide=True) needs the labels")
            logits = require_logits(teacher, "DCTAttentionLoss(pred_guide=True)", "teacher")
            per_sample = per_sample * teacher_correct(logits, labels).to(per_sample.dtype)
        return {"dct": self.weight * per_sample.mean()}
