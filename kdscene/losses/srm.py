"""Sparse Representation Matching (SRM): the stage-1 dictionary loss and the stage-2 matching loss.

Tran, Gabbouj, Iosifidis, "Knowledge Distillation By Sparse Representation Matching" (arXiv
2103.17012); authors' code ``viebboy/SRM`` @77a12ba (``cifar100/code/Layers.py``: ``SparseRep``,
``GlobalLocalLabel``, ``GlobalLocalPred``; ``Utility.py``: ``codeword_epoch_trainer``,
``srm_init_epoch_trainer``, ``KD_loss``). The paper's method section could not be read (only the
abstract and introduction are public), so the equations below are numbered SRM-1 ... SRM-8 here and
follow the authors' code, which was run to check them.

Per level, one teacher tap ↔ one student tap with the same H×W; x(h,w) ∈ R^D is the teacher's feature
at a pixel and s(h,w) ∈ R^{D_s} the student's. K = int(c·D) codewords, λ = int(D·s·c) (0 → 1).

    SRM-1  S(h,w,k)  = σ(⟨x(h,w), C_k⟩ + b)          C ∈ R^{D×K}, ONE scalar b shared by all k
    SRM-2  S̃(h,w,k) = S(h,w,k)·[S(h,w,k) ≥ λ-th largest of S(h,w,·)]     (ties keep more than λ)
    SRM-3  x̂(h,w)   = Σ_k S̃(h,w,k)·C_k
    SRM-4  stage 1:  L_dict = Σ_levels MSE(x̂, x)     (element mean; only C, b are trained)
    SRM-5  labels:   g_k = mean_{h,w} S̃(h,w,k) ∈ [0,1]^K,   ℓ(h,w) = argmax_k S(h,w,k)
    SRM-6  student:  P(h,w,k) = σ(⟨s(h,w), C^s_k⟩ + b^s),  C^s ∈ R^{D_s×K} (the teacher's K), ĝ = mean_{h,w} P
    SRM-7  stage 2:  L_srm = Σ_levels BCE(ĝ, g) + CE(P, ℓ)   (BCE mean over B·K, CE mean over B·H·W)
    SRM-8  stage 3:  α·T²·KL_batchmean(p_t ‖ p_s) + (1 − α)·CE   (ImageNet α = 0.3, T = 4), i.e.
                     :class:`~kdscene.losses.KDLoss` (weight α) + CrossEntropyLoss (weight 1 − α)

Stage 1 is :class:`SRMDictionaryLoss`; stage 2 is :class:`SRMLoss`, which loads the frozen stage-1
dictionaries from the stage-1 Lightning checkpoint (keys ``distill.<dictionary_key>.coders.<i>.*``), or
takes them in memory (a trained ``SRMDictionaryLoss().coders``, :func:`load_dictionaries`' result; copied),
and computes the labels on the fly from the frozen teacher. ``conf/distill/srm.yaml`` runs the three
stages (:mod:`kdscene.cli.recipe`).

Differences between the paper, the authors' code and kdscene, and the option that selects each:

1. The authors feed the already-sigmoided P to ``CrossEntropyLoss`` as logits, so the CE cannot fall
   below about log(1 + (K−1)/e) (≈ 3.2 for K = 64). ``ce_input="sigmoid"`` (default) keeps this;
   ``ce_input="logits"`` uses the pre-sigmoid scores ⟨s, C^s_k⟩ + b^s instead.
2. λ is computed as int(D·(s·c)) like the code, which can differ from int(K·s) by one when c·D is
   fractional (:func:`~kdscene.losses.srm_parts.srm_sizes`). No option.
3. ImageNet code: the level-1 dictionary is learned on ResNet-34 ``layer1`` but the labels and the
   student's predictions use the ``maxpool`` output (both 64@56). kdscene uses the same teacher taps in
   both stages (``maxpool`` in ``conf/distill/srm.yaml``, as in the authors' transfer-learning code);
   the mismatch is not reproduced.
4. Authors' stage 1 leaves the teacher in ``train()`` mode under ``no_grad``, so its BatchNorm running
   statistics drift while the dictionaries are learned. kdscene keeps the teacher in eval mode
   (:class:`~kdscene.module.DistillationModule`); no option.
5. Authors' variants ``target_type='global'`` / ``'local'`` use one term only: ``targets`` selects
   ``"global-local"`` (default), ``"global"`` or ``"local"``.
6. The authors keep the stage-1 dictionaries with the lowest training loss and (CIFAR) the stage-2
   student with the lowest validation loss; kdscene's stages hand over each stage's ``last.ckpt``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscene.features import Features, TapInfo
from kdscene.losses.base import DistillLoss, check_choice, upcast
from kdscene.losses.srm_parts import SparseCoder, SRMPredictor, srm_level_loss, srm_sizes

__all__ = ["SRMDictionaryLoss", "SRMLoss", "load_dictionaries", "pair_levels"]

CEInput = Literal["sigmoid", "logits"]
Targets = Literal["global-local", "global", "local"]
Dictionary = str | Path | Sequence[SparseCoder] | None


def pair_levels(student_taps: Sequence[TapInfo], teacher_taps: Sequence[TapInfo]) -> None:
    """Check that the i-th student tap and the i-th teacher tap have the same H×W; raise otherwise."""
    if len(student_taps) != len(teacher_taps):
        raise ValueError(
            f"SRM pairs one student tap with one teacher tap, but the student taps "
            f"{[t.name for t in student_taps]} and the teacher taps {[t.name for t in teacher_taps]}"
        )
    for s, t in zip(student_taps, teacher_taps):
        if tuple(s.size) != tuple(t.size):
            raise ValueError(
                f"SRM level {s.name!r}↔{t.name!r}: the student map is {tuple(s.size)} but the teacher's "
                f"is {tuple(t.size)}; paired taps must have the same H×W"
            )


def _check_maps(features: Features, count: int, who: str) -> None:
    if len(features.maps) != count:
        raise ValueError(
            f"SRM was built for {count} {who} maps but got {len(features.maps)} {list(features.names)}"
        )


def _no_autocast(x: Tensor) -> torch.autocast:
    # BCE is refused under CUDA autocast, and top-λ ties should not depend on half precision
    return torch.autocast(device_type=x.device.type, enabled=False)


class SRMDictionaryLoss(DistillLoss):
    """Stage 1: learn one sparse dictionary per teacher tap by reconstruction (SRM-1 ... SRM-4).

    The student is not used; run it with ``train_student: false`` so that only the dictionaries train.

    Args:
        teacher_taps: the teacher's probed taps (filled in by the module); one dictionary per tap.
        weight: multiplier of Σ_levels MSE (1 in the authors' code).
        codeword_multiplier: c, K = int(c·D) (ImageNet 4; CIFAR grid {1.5, 2, 3}).
        sparsity_multiplier: s, λ = int(D·s·c) (ImageNet 0.02; CIFAR grid {0.01, 0.02, 0.03}).
    """

    def __init__(
        self,
        teacher_taps: Sequence[TapInfo],
        weight: float = 1.0,
        codeword_multiplier: float = 4.0,
        sparsity_multiplier: float = 0.02,
    ) -> None:
        super().__init__(weight)
        if not teacher_taps:
            raise ValueError("SRMDictionaryLoss needs at least one teacher tap")
        self.coders = nn.ModuleList(
            SparseCoder(t.channels, *srm_sizes(t.channels, codeword_multiplier, sparsity_multiplier))
            for t in teacher_taps
        )

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        _check_maps(teacher, len(self.coders), "teacher")
        with _no_autocast(teacher.maps[0]):
            total = sum(
                F.mse_loss(coder.reconstruct(upcast(x)), upcast(x))
                for coder, x in zip(self.coders, teacher.maps)
            )
        return {"mse": self.weight * total}


def _read_state(path: str | Path) -> Mapping[str, Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"SRM dictionary checkpoint {str(path)!r} does not exist")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    return obj.get("state_dict", obj) if isinstance(obj, Mapping) else {}


def _missing_key_error(path: str | Path, prefix: str, state: Mapping[str, Tensor]) -> KeyError:
    keys = sorted(k for k in state if k.startswith("distill.")) or sorted(state)
    shown = ", ".join(keys[:20]) + (f" ... and {len(keys) - 20} more" if len(keys) > 20 else "")
    return KeyError(
        f"SRM dictionary checkpoint {str(path)!r} holds no keys starting with {prefix!r}; set "
        f"dictionary_key to the stage-1 term's config key. Available keys: {shown or '(none)'}"
    )


def load_dictionaries(path: str | Path, key: str = "srm_dict") -> list[SparseCoder]:
    """The stage-1 dictionaries saved under ``distill.<key>.coders.<i>.*`` in a Lightning checkpoint.

    Args:
        path: a stage-1 checkpoint (``{"state_dict": {...}}``) or a plain state dict.
        key: the config key of the :class:`SRMDictionaryLoss` term in stage 1.

    Returns:
        One :class:`~kdscene.losses.srm_parts.SparseCoder` per level, with K and λ read from the file.
    """
    state = _read_state(path)
    prefix = f"distill.{key}.coders."
    found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not found:
        raise _missing_key_error(path, prefix, state)
    coders = []
    for i in sorted({int(k.split(".")[0]) for k in found}):
        own = {k.split(".", 1)[1]: v for k, v in found.items() if k.split(".")[0] == str(i)}
        if "codewords" not in own or "_extra_state" not in own:
            raise _missing_key_error(path, f"{prefix}{i}.codewords / _extra_state", state)
        dim, num = own["codewords"].shape
        coder = SparseCoder(dim, num, int(own["_extra_state"].reshape(-1)[0]))
        coder.load_state_dict(own, strict=True)
        coders.append(coder)
    return coders


def _check_dictionaries(
    coders: Sequence[SparseCoder],
    teacher_taps: Sequence[TapInfo],
    codeword_multiplier: float | None,
    sparsity_multiplier: float | None,
) -> None:
    if len(coders) != len(teacher_taps):
        raise ValueError(
            f"the SRM dictionary file has {len(coders)} levels but the teacher taps "
            f"{[t.name for t in teacher_taps]}"
        )
    for coder, tap in zip(coders, teacher_taps):
        if coder.dim != tap.channels:
            raise ValueError(
                f"SRM dictionary for teacher tap {tap.name!r} has D={coder.dim} but the tap has "
                f"{tap.channels} channels"
            )
        if codeword_multiplier is None:
            continue  # λ = int(D·s·c) cannot be checked without c
        got = (coder.num_codewords, coder.sparsity)
        if sparsity_multiplier is None:
            want = (int(tap.channels * codeword_multiplier), coder.sparsity)
        else:
            want = srm_sizes(tap.channels, codeword_multiplier, sparsity_multiplier)
        if want != got:
            raise ValueError(
                f"SRM dictionary for {tap.name!r} has (K, λ)={got} but c={codeword_multiplier}, "
                f"s={sparsity_multiplier} give {want}; leave them null to take K and λ from the file"
            )


def _copied(coders: Sequence[SparseCoder]) -> list[SparseCoder]:
    """Private copies of in-memory dictionaries, so that stage 2 never changes the caller's."""
    bad = [type(c).__name__ for c in coders if not isinstance(c, SparseCoder)]
    if bad:
        raise TypeError(f"SRMLoss: dictionary holds {bad}; give SparseCoder modules or a checkpoint path")
    return [copy.deepcopy(c) for c in coders]


def _dictionaries(
    dictionary: Dictionary,
    key: str,
    teacher_taps: Sequence[TapInfo],
    codeword_multiplier: float | None,
    sparsity_multiplier: float | None,
) -> list[SparseCoder]:
    """The teacher's dictionaries from a checkpoint path, from memory, or random (``None``/``""``)."""
    if dictionary is None or (isinstance(dictionary, str) and not dictionary):
        return _random_dictionaries(teacher_taps, codeword_multiplier, sparsity_multiplier)
    if isinstance(dictionary, (str, Path)):
        coders = load_dictionaries(dictionary, key)
    else:
        coders = _copied(dictionary)
    _check_dictionaries(coders, teacher_taps, codeword_multiplier, sparsity_multiplier)
    return coders


def _random_dictionaries(
    teacher_taps: Sequence[TapInfo], codeword_multiplier: float | None, sparsity_multiplier: float | None
) -> list[SparseCoder]:
    warnings.warn(
        "SRMLoss got no stage-1 dictionary (dictionary is empty): the teacher dictionaries are random, "
        "so the labels are meaningless. This is only right for smoke tests (fast_dev_run saves no "
        "checkpoint to hand over).",
        stacklevel=4,
    )
    c = 4.0 if codeword_multiplier is None else codeword_multiplier
    s = 0.02 if sparsity_multiplier is None else sparsity_multiplier
    return [SparseCoder(t.channels, *srm_sizes(t.channels, c, s)) for t in teacher_taps]


class SRMLoss(DistillLoss):
    """Stage 2: the student predicts the teacher's sparse-code labels at every level (SRM-5 ... SRM-7).

    The teacher dictionaries are frozen (``requires_grad=False``, never in the optimizer); the student
    predictors (one per level, with the teacher's K) are trained with the student.

    Args:
        student_taps: the student's probed taps (filled in by the module); the i-th pairs with the
            teacher's i-th, same H×W.
        teacher_taps: the teacher's probed taps.
        weight: multiplier of every term (all terms have weight 1 in the authors' code).
        dictionary: path of the stage-1 checkpoint (``${kdscene.stage:dictionary}``), or the stage-1
            dictionaries in memory (one :class:`~kdscene.losses.srm_parts.SparseCoder` per teacher tap,
            e.g. ``SRMDictionaryLoss(...).coders`` or :func:`load_dictionaries`' result), which are
            copied: training stage 2 never changes the caller's. ``None`` or ``""`` builds random
            dictionaries (c, s default to 4, 0.02), with a warning (smoke tests only).
        dictionary_key: config key of the stage-1 :class:`SRMDictionaryLoss` term (``srm_dict``).
        codeword_multiplier: c. ``None`` (default) takes K from the file; a value must agree with it.
        sparsity_multiplier: s. ``None`` (default) takes λ from the file; with c given, it must agree.
        ce_input: ``"sigmoid"`` (default, authors' code: σ-activated P into the CE as logits) or
            ``"logits"`` (the pre-sigmoid scores).
        targets: ``"global-local"`` (default), ``"global"`` (BCE only) or ``"local"`` (CE only).
    """

    def __init__(
        self,
        student_taps: Sequence[TapInfo],
        teacher_taps: Sequence[TapInfo],
        weight: float = 1.0,
        dictionary: Dictionary = None,
        dictionary_key: str = "srm_dict",
        codeword_multiplier: float | None = None,
        sparsity_multiplier: float | None = None,
        ce_input: CEInput = "sigmoid",
        targets: Targets = "global-local",
    ) -> None:
        super().__init__(weight)
        self.ce_input = check_choice("SRMLoss", "ce_input", ce_input, CEInput)
        self.targets = check_choice("SRMLoss", "targets", targets, Targets)
        pair_levels(student_taps, teacher_taps)
        coders = _dictionaries(
            dictionary, dictionary_key, teacher_taps, codeword_multiplier, sparsity_multiplier
        )
        self.teacher_dicts = nn.ModuleList(coders).requires_grad_(False)
        self.predictors = nn.ModuleList(
            SRMPredictor(s.channels, c.num_codewords) for s, c in zip(student_taps, coders)
        )

    def level_terms(self, level: int, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(BCE, CE) of one level from the student map ``s`` and the teacher map ``t``."""
        if s.shape[-2:] != t.shape[-2:]:
            raise ValueError(
                f"SRM level {level}: student map {tuple(s.shape[-2:])} vs teacher map "
                f"{tuple(t.shape[-2:])}; paired maps must have the same H×W"
            )
        with torch.no_grad():
            global_label, local_label = self.teacher_dicts[level].labels(upcast(t))
        global_pred, prob, logits = self.predictors[level](upcast(s))
        local_input = prob if self.ce_input == "sigmoid" else logits
        return srm_level_loss(global_pred, local_input, global_label, local_label)

    def forward(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        _check_maps(student, len(self.predictors), "student")
        _check_maps(teacher, len(self.teacher_dicts), "teacher")
        with _no_autocast(student.maps[0]):
            pairs = [self.level_terms(i, s, t) for i, (s, t) in enumerate(zip(student.maps, teacher.maps))]
        out = {}
        if self.targets != "local":
            out["global"] = self.weight * sum(bce for bce, _ in pairs)
        if self.targets != "global":
            out["local"] = self.weight * sum(ce for _, ce in pairs)
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ce_input={self.ce_input!r}, targets={self.targets!r}"
