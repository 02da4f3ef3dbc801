"""Slow float64 numpy references for the baseline losses' adapters: general (strided, padded) and
transposed convolutions by explicit loops, adaptive average pooling by its bin rule, linear layers.

Each function reads a module's parameters and recomputes its output from the definition, never with
the torch op the module uses.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tests.losses.nn_reference import arr


def conv2d(x: np.ndarray, conv: torch.nn.Conv2d) -> np.ndarray:
    """out[b,o,i,j] = Σ_{c,ki,kj} W[o,c,ki,kj] · xpad[b,c,i·s+ki,j·s+kj] (+ bias)."""
    w = arr(conv.weight)
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    b, c, h, wd = x.shape
    kh, kw = w.shape[-2:]
    padded = np.zeros((b, c, h + 2 * ph, wd + 2 * pw))
    padded[:, :, ph : ph + h, pw : pw + wd] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((b, w.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = padded[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            out[:, :, i, j] = np.einsum("bckl,ockl->bo", patch, w)
    if conv.bias is not None:
        out += arr(conv.bias)[None, :, None, None]
    return out


def conv_transpose2d(x: np.ndarray, conv: torch.nn.ConvTranspose2d) -> np.ndarray:
    """Scatter form: each input pixel (i, j) adds x·W[c,o] at rows i·s − p + ki, cols j·s − p + kj."""
    w = arr(conv.weight)  # (C_in, C_out, kh, kw)
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    b, c, h, wd = x.shape
    kh, kw = w.shape[-2:]
    oh, ow = (h - 1) * sh - 2 * ph + kh, (wd - 1) * sw - 2 * pw + kw
    out = np.zeros((b, w.shape[1], oh, ow))
    for i in range(h):
        for j in range(wd):
            for ki in range(kh):
                for kj in range(kw):
                    r, q = i * sh - ph + ki, j * sw - pw + kj
                    if 0 <= r < oh and 0 <= q < ow:
                        out[:, :, r, q] += x[:, :, i, j] @ w[:, :, ki, kj]
    if conv.bias is not None:
        out += arr(conv.bias)[None, :, None, None]
    return out


def adaptive_pool(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bin (i, j) averages rows [⌊i·H/n⌋, ⌈(i+1)·H/n⌉) and the same for columns."""
    h, w = x.shape[-2:]
    out = np.zeros((*x.shape[:2], *size))
    for i in range(size[0]):
        for j in range(size[1]):
            r0, r1 = (i * h) // size[0], math.ceil((i + 1) * h / size[0])
            c0, c1 = (j * w) // size[1], math.ceil((j + 1) * w / size[1])
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out


def linear(x: np.ndarray, layer: torch.nn.Linear) -> np.ndarray:
    """x Wᵀ + b, row by row."""
    w, b = arr(layer.weight), arr(layer.bias)
    return np.stack([np.array([row @ w[o] + b[o] for o in range(w.shape[0])]) for row in x])
