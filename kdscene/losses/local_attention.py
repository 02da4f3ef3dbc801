"""Stand-alone local self-attention over a k×k window, as FAM-KD uses it to fuse review levels.

Ramachandran, Parmar, Vaswani, Bello, Levskaya, Shlens, "Stand-Alone Self-Attention in Vision Models"
(NeurIPS 2019, arXiv 1906.05909): local attention over a k×k window with relative row/column
embeddings, as implemented in the code FAM-KD uses. FAM-KD
(Pham et al., WACV 2024; code ``cuong-pv/FAM-KD``, ``distillers/FAM_KD.py`` class ``AttentionConv``, itself
from ``leaderj1001/Stand-Alone-Self-Attention``) takes queries from one map and keys/values from another.

For every channel c and position p with k×k neighbourhood N(p) (zero padding, stride 1)::

    q = W_q y,   k = W_k x,   v = W_v x                           (1×1 convolutions, no bias)
    s_{c,p,n} = q_{c,p} · (k_{c,n} + e_{c,n−p})                   n ∈ N(p)
    out_{c,p} = Σ_n softmax_n(s_{c,p,n}) · v_{c,n}

e is the relative embedding: for the first ⌊C/2⌋ channels it depends on the window row only
(``rel_h``), for the others on the window column only (``rel_w``); both start N(0, 1). The attention is
per channel (an element-wise product, not a dot product over channels) and the softmax runs over the k²
window positions, zero-padded ones included.

Paper vs code: in the paper the logit is a dot product q·(k + e) over the channels of one attention
head (``groups`` heads); the code FAM-KD uses multiplies element-wise and never sums over a head's
channels, so every channel attends on its own and ``groups`` only reshapes. kdscene follows the code.
Differences from the authors' code, none numerical:
- ``groups`` is left out (it changes nothing), and with it their check ``channels % 4 == 0``. Odd
  channel counts, which their split rejects, give ``rel_h`` ⌊C/2⌋ rows and ``rel_w`` the rest.
- They pad x and then apply the bias-free key/value convolutions; this pads after them (the same values).
- The embeddings are stored as (C/2, k) instead of (C/2, 1, 1, k, 1) and (C/2, 1, 1, 1, k).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv1x1(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class LocalSelfAttention(nn.Module):
    """Per-channel attention of queries from ``y`` over k×k windows of ``x`` (module docstring).

    Args:
        channels: channels of ``x``, ``y`` and the output.
        kernel_size: window size k (odd; 3 in FAM-KD).
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if channels < 2:
            raise ValueError(f"LocalSelfAttention needs at least 2 channels, got {channels}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.query = _conv1x1(channels)
        self.key = _conv1x1(channels)
        self.value = _conv1x1(channels)
        self.rel_h = nn.Parameter(torch.randn(channels // 2, kernel_size))
        self.rel_w = nn.Parameter(torch.randn(channels - channels // 2, kernel_size))

    def _windows(self, t: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W, k²): the zero-padded k×k neighbourhood of every position."""
        k, pad = self.kernel_size, self.kernel_size // 2
        t = F.pad(t, (pad, pad, pad, pad))
        return t.unfold(2, k, 1).unfold(3, k, 1).flatten(-2)

    def relative_embedding(self) -> Tensor:
        """(C, 1, 1, k²) embedding of each window position (row-major), per channel."""
        k = self.kernel_size
        rows = self.rel_h[:, :, None].expand(-1, k, k)
        cols = self.rel_w[:, None, :].expand(-1, k, k)
        return torch.cat([rows, cols]).reshape(self.channels, 1, 1, k * k)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Attend from queries of ``y`` to keys/values of ``x``; both (B, C, H, W)."""
        if x.shape != y.shape or x.shape[1] != self.channels:
            raise ValueError(
                f"LocalSelfAttention({self.channels}): x {tuple(x.shape)} and y {tuple(y.shape)} must both "
                f"be (B, {self.channels}, H, W)"
            )
        q = self.query(y).unsqueeze(-1)
        keys = self._windows(self.key(x)) + self.relative_embedding()
        values = self._windows(self.value(x))
        attention = torch.softmax(q * keys, dim=-1)
        return (attention * values).sum(-1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
