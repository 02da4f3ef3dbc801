"""Building blocks of Sparse Representation Matching (SRM): codebooks, sparse codes, labels, predictors.

See :mod:`kdscene.losses.srm` for the paper, the equations (referred to here as SRM-1 ... SRM-6) and the
differences between paper and authors' code. Every map is (B, D, H, W); codes are computed per pixel
with the pixel's D-dim feature vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def srm_sizes(dim: int, codeword_multiplier: float, sparsity_multiplier: float) -> tuple[int, int]:
    """Number of codewords K and sparsity λ of a level with ``dim`` channels.

    K = int(c·D) and λ = int(D·(s·c)), with λ = 0 raised to 1, computed the way the authors' code does
    (``SparseRep(D, D·c, D·s·c)`` after ``int()``). This equals int(K·s) except when c·D is fractional
    and the truncation of K crosses a multiple of 1/s.

    Args:
        dim: channels D of the teacher's map.
        codeword_multiplier: c (4 for ImageNet ResNet-34, grid {1.5, 2, 3} on CIFAR-100).
        sparsity_multiplier: s (0.02 for ImageNet, grid {0.01, 0.02, 0.03} on CIFAR-100).

    Returns:
        ``(K, λ)``.
    """
    if codeword_multiplier <= 0 or sparsity_multiplier <= 0:
        raise ValueError(
            f"codeword_multiplier and sparsity_multiplier must be > 0, got "
            f"{codeword_multiplier} and {sparsity_multiplier}"
        )
    num_codewords = int(dim * codeword_multiplier)
    sparsity = max(int(dim * (sparsity_multiplier * codeword_multiplier)), 1)
    if num_codewords < 1 or sparsity > num_codewords:
        raise ValueError(
            f"a level with {dim} channels gets K={num_codewords} codewords and sparsity λ={sparsity} "
            f"(c={codeword_multiplier}, s={sparsity_multiplier}); need 1 <= λ <= K"
        )
    return num_codewords, sparsity


def keep_top(similarity: Tensor, sparsity: int) -> Tensor:
    """Zero every entry below the ``sparsity``-th largest along the last dim (SRM-2).

    Entries equal to the λ-th largest value are all kept, so ties can keep more than λ entries (as in
    the authors' ``similarity * (similarity >= min_coef)``). No gradient flows through the mask.
    """
    threshold = torch.topk(similarity, sparsity, dim=-1).values[..., -1:]
    return similarity * (similarity >= threshold).to(similarity.dtype)


class Codebook(nn.Module):
    """A dictionary C ∈ R^{D×K} with ONE scalar intercept b shared by all codewords (SRM-1).

    Initialised like the authors' layers: Kaiming-uniform on the (D, K) tensor and b ~ U(−1, 1).

    Args:
        dim: feature channels D.
        num_codewords: K.
    """

    def __init__(self, dim: int, num_codewords: int) -> None:
        super().__init__()
        self.dim = int(dim)
        self.num_codewords = int(num_codewords)
        self.codewords = nn.Parameter(torch.empty(self.dim, self.num_codewords))
        self.intercept = nn.Parameter(torch.empty(1))
        nn.init.kaiming_uniform_(self.codewords)
        nn.init.uniform_(self.intercept, -1.0, 1.0)

    def logits(self, x: Tensor) -> Tensor:
        """⟨x(h,w), C_k⟩ + b for every pixel and codeword; (B, D, H, W) -> (B, H, W, K)."""
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"expected a (B, {self.dim}, H, W) map, got {tuple(x.shape)}")
        return torch.einsum("bdhw,dk->bhwk", x, self.codewords) + self.intercept

    def similarity(self, x: Tensor) -> Tensor:
        """S = σ(⟨x, C_k⟩ + b); (B, D, H, W) -> (B, H, W, K)."""
        return torch.sigmoid(self.logits(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_codewords={self.num_codewords}"


class SparseCoder(Codebook):
    """The teacher's dictionary at one level: sparse codes, reconstruction and SRM labels.

    λ is saved in the state dict (as ``_extra_state``), so a stage-1 checkpoint fully describes the
    dictionaries that produce the stage-2 labels.

    Args:
        dim: teacher channels D.
        num_codewords: K.
        sparsity: λ, the number of codes kept per pixel (ties keep more).
    """

    def __init__(self, dim: int, num_codewords: int, sparsity: int) -> None:
        super().__init__(dim, num_codewords)
        if not 1 <= sparsity <= num_codewords:
            raise ValueError(f"sparsity must be in [1, {num_codewords}], got {sparsity}")
        self.sparsity = int(sparsity)

    def get_extra_state(self) -> Tensor:
        return torch.tensor([self.sparsity])

    def set_extra_state(self, state: Tensor) -> None:
        self.sparsity = int(state.reshape(-1)[0])

    def sparse_code(self, x: Tensor) -> Tensor:
        """S̃: the similarity with all but the top-λ entries zeroed (SRM-2); (B, H, W, K)."""
        return keep_top(self.similarity(x), self.sparsity)

    def reconstruct(self, x: Tensor) -> Tensor:
        """x̂(h,w) = Σ_k S̃(h,w,k)·C_k (SRM-3); (B, D, H, W) -> (B, D, H, W)."""
        return torch.einsum("bhwk,dk->bdhw", self.sparse_code(x), self.codewords)

    def labels(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Image-level g = mean_{h,w} S̃ (B, K) and pixel-level ℓ = argmax_k S (B, H, W) (SRM-5)."""
        code = self.sparse_code(x)
        return code.mean(dim=(1, 2)), code.argmax(dim=-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sparsity={self.sparsity}"


class SRMPredictor(Codebook):
    """The student's predictor at one level: its own dictionary with the teacher's K (SRM-6).

    ``forward`` returns the image-level prediction ĝ = mean_{h,w} P (B, K), the pixel-level prediction
    P = σ(⟨s, C^s_k⟩ + b^s) as (B, K, H, W), and the pre-sigmoid logits, also (B, K, H, W).
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = self.logits(x)
        prob = torch.sigmoid(logits)
        return prob.mean(dim=(1, 2)), prob.permute(0, 3, 1, 2), logits.permute(0, 3, 1, 2)


def srm_level_loss(
    global_pred: Tensor,
    local_input: Tensor,
    global_label: Tensor,
    local_label: Tensor,
) -> tuple[Tensor, Tensor]:
    """BCE(ĝ, g) (mean over B·K) and CE(local_input, ℓ) (mean over B·H·W) of one level (SRM-7)."""
    bce = F.binary_cross_entropy(global_pred, global_label)
    ce = F.cross_entropy(local_input, local_label)
    return bce, ce
