"""Slow float64 numpy references of the small layers the review-style losses are built from.

Each function reads a module's parameters (inputs, not the code under test) and recomputes its output
with explicit loops or plain array arithmetic, never with the torch op the module uses.
"""

from __future__ import annotations

import numpy as np
import torch


def arr(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def conv1x1(x: np.ndarray, conv: torch.nn.Conv2d) -> np.ndarray:
    """Σ_i W[o, i] x[b, i] (+ b[o])."""
    w = arr(conv.weight)[:, :, 0, 0]
    out = np.einsum("oi,bihw->bohw", w, x)
    if conv.bias is not None:
        out = out + arr(conv.bias)[None, :, None, None]
    return out


def conv3x3(x: np.ndarray, conv: torch.nn.Conv2d) -> np.ndarray:
    """Zero-padded 3×3 cross-correlation by loops over the kernel taps."""
    w = arr(conv.weight)
    b, _, h, wd = x.shape
    padded = np.zeros((b, x.shape[1], h + 2, wd + 2))
    padded[:, :, 1:-1, 1:-1] = x
    out = np.zeros((b, w.shape[0], h, wd))
    for di in range(3):
        for dj in range(3):
            out += np.einsum("oi,bihw->bohw", w[:, :, di, dj], padded[:, :, di : di + h, dj : dj + wd])
    return out


def batch_norm(x: np.ndarray, bn: torch.nn.BatchNorm2d, train: bool) -> np.ndarray:
    """Batch statistics (biased variance) in training, running statistics in evaluation."""
    if train:
        mean = x.mean(axis=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
    else:
        mean, var = arr(bn.running_mean), arr(bn.running_var)
    norm = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + bn.eps)
    return norm * arr(bn.weight)[None, :, None, None] + arr(bn.bias)[None, :, None, None]


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def nearest(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize: output index i reads input index floor(i · in / out)."""
    h, w = x.shape[-2:]
    rows = [(i * h) // size[0] for i in range(size[0])]
    cols = [(j * w) // size[1] for j in range(size[1])]
    return x[:, :, rows][:, :, :, cols]


def randomise_batch_norms(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Non-trivial affine parameters and running statistics in every BatchNorm2d."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=generator, dtype=m.weight.dtype) + 0.5
            m.bias.data = torch.randn(n, generator=generator, dtype=m.bias.dtype) * 0.3
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
