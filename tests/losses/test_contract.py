"""The contract of every loss: each ``DistillLoss`` subclass that ``kdscene.losses`` exports is built from
the probed taps of two small fake networks, as ``DistillationModule`` builds it, and checked for what
every loss promises: finite scalar terms scaled by ``weight``, clear errors for a missing teacher and raw
tensors, bf16 autocast, gradients to the student (and its own parameters) and never to the teacher,
and a ``state_dict`` that reproduces its terms. A newly exported loss joins automatically."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import Tensor
from torchvision.models.resnet import BasicBlock

import kdscene.losses
from kdscene.losses import DistillLoss, Features, SRMDictionaryLoss, TapInfo

BATCH, CLASSES, NUM_SAMPLES = 4, 5, 16
STUDENT = ((8, 8), (16, 4), (32, 2))  # (channels, size) of the three tapped maps
TEACHER = ((16, 8), (32, 4), (64, 2))
FIELDS = ("logits", "maps", "pooled")

LOSSES = sorted(
    name
    for name in kdscene.losses.__all__
    if isinstance(obj := getattr(kdscene.losses, name), type)
    and issubclass(obj, DistillLoss)
    and obj is not DistillLoss
)


def _taps(shapes: tuple[tuple[int, int], ...]) -> list[TapInfo]:
    return [TapInfo(f"layer{i + 1}", c, 32 // s, (s, s)) for i, (c, s) in enumerate(shapes)]


S_TAPS, T_TAPS = _taps(STUDENT), _taps(TEACHER)


def _preact_teacher() -> torch.nn.Module:
    """A stand-in teacher whose stages layer1..layer3 end in a torchvision BasicBlock of TEACHER's widths:
    OFD reads its margins from their ``bn2``."""
    net = torch.nn.Module()
    for i, (channels, _) in enumerate(TEACHER):
        net.add_module(f"layer{i + 1}", torch.nn.Sequential(BasicBlock(channels, channels)))
    return net


# Constructor arguments a loss needs beyond its taps, built from (student_taps, teacher_taps).
EXTRA_ARGS: dict[str, Callable[[list[TapInfo], list[TapInfo]], dict[str, Any]]] = {
    "SemCKDLoss": lambda s, t: {"batch_size": BATCH},  # its query/key MLPs are built for one batch size
    # stage 2 needs stage-1 dictionaries: in memory, as a trained SRMDictionaryLoss holds them
    "SRMLoss": lambda s, t: {"dictionary": SRMDictionaryLoss(t, codeword_multiplier=1.0).coders},
    # the memory bank has one row per training sample (the batches' indices are in range(NUM_SAMPLES))
    "CRDLoss": lambda s, t: {"num_samples": NUM_SAMPLES},
    # OFD distils the teacher's pre-ReLU taps and reads its margins from the teacher's BatchNorms
    "OFDLoss": lambda s, t: {
        "teacher_taps": [replace(tap, name=f"{tap.name}:pre") for tap in t],
        "teacher_network": _preact_teacher(),
    },
}

# Which Features fields each loss reads: (student's, teacher's). DCT's teacher guidance reads the
# teacher's logits (pred_guide, default True); ReviewKD and FAM-KD read the pooled vector as a level.
READS: dict[str, tuple[set[str], set[str]]] = {
    "ATLoss": ({"maps"}, {"maps"}),
    "CRDLoss": ({"pooled"}, {"pooled"}),
    "CrossEntropyLoss": ({"logits"}, set()),
    "DCTAttentionLoss": ({"maps"}, {"maps", "logits"}),
    "DKDLoss": ({"logits"}, {"logits"}),
    "FAMKDLoss": ({"maps", "pooled"}, {"maps", "pooled"}),
    "FitNetLoss": ({"maps"}, {"maps"}),
    "KDLoss": ({"logits"}, {"logits"}),
    "NSTLoss": ({"maps"}, {"maps"}),
    "OFDLoss": ({"maps"}, {"maps"}),
    "PKTLoss": ({"pooled"}, {"pooled"}),
    "RKDLoss": ({"pooled"}, {"pooled"}),
    "ReviewKDLoss": ({"maps", "pooled"}, {"maps", "pooled"}),
    "SPLoss": ({"maps"}, {"maps"}),
    "SRMDictionaryLoss": (set(), {"maps"}),
    "SRMLoss": ({"maps"}, {"maps"}),
    "SemCKDLoss": ({"maps"}, {"maps"}),
    "VIDLoss": ({"maps"}, {"maps"}),
}


def build(name: str, seed: int = 0, **kw: Any) -> DistillLoss:
    """Build a loss as ``kdscene.module.build_term`` does: taps passed when the signature names them."""
    cls = getattr(kdscene.losses, name)
    params = inspect.signature(cls).parameters
    args = {k: v for k, v in (("student_taps", S_TAPS), ("teacher_taps", T_TAPS)) if k in params}
    torch.manual_seed(seed)
    args.update(EXTRA_ARGS.get(name, lambda s, t: {})(S_TAPS, T_TAPS))
    try:
        return cls(**args, **kw)
    except TypeError as err:
        pytest.fail(f"cannot build {name} ({err}): add its extra constructor arguments to EXTRA_ARGS")


def features(shapes: tuple[tuple[int, int], ...], seed: int, dtype: torch.dtype = torch.float32) -> Features:
    """Leaf tensors that require grad: logits for CLASSES classes, the maps and the pooled vector; and the
    batch's dataset indices, as training batches carry them for a loss with ``needs_indices``."""
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g).to(dtype).requires_grad_()

    maps = tuple(leaf(BATCH, c, s, s) for c, s in shapes)
    names = tuple(t.name for t in _taps(shapes))
    pooled, indices = leaf(BATCH, shapes[-1][0]), torch.arange(3, 3 + BATCH)
    return Features(logits=leaf(BATCH, CLASSES), maps=maps, names=names, pooled=pooled, indices=indices)


def inputs(dtype: torch.dtype = torch.float32) -> tuple[Features, Features, Tensor]:
    """Student and teacher features and labels = the teacher's argmax, so that DCT's guidance keeps
    every sample (a misclassified one would zero its term)."""
    student, teacher = features(STUDENT, 1, dtype), features(TEACHER, 2, dtype)
    return student, teacher, teacher.logits.detach().argmax(dim=1)


def tensors(feats: Features, field: str) -> list[Tensor]:
    value = getattr(feats, field)
    return list(value) if field == "maps" else [value]


def assert_terms(terms: dict[str, Tensor], name: str) -> None:
    assert terms, f"{name} returned no term"
    for key, value in terms.items():
        assert isinstance(value, Tensor) and value.dim() == 0, f"{name}[{key!r}] is not a 0-d tensor"
        assert value.is_floating_point() and torch.isfinite(value), f"{name}[{key!r}] = {value}"


def test_every_exported_loss_is_covered():
    assert len(LOSSES) >= 15 and "DistillLoss" not in LOSSES
    assert sorted(READS) == LOSSES, "declare what a new loss reads in READS"


@pytest.mark.parametrize("name", LOSSES)
def test_terms_are_finite_scalars_scaled_linearly_by_the_weight(name):
    one, two = build(name, weight=1.0), build(name, weight=2.0)
    two.load_state_dict(one.state_dict())
    student, teacher, labels = inputs()
    a, b = one(student, teacher, labels), two(student, teacher, labels)
    assert_terms(a, name)
    assert list(a) == list(b)
    for key in a:
        torch.testing.assert_close(
            b[key], 2.0 * a[key], msg=f"{name}[{key!r}]: weight 2 is not twice weight 1"
        )


@pytest.mark.parametrize("name", LOSSES)
def test_missing_teacher_raises_a_value_error_naming_the_loss(name):
    loss = build(name)
    student, _, labels = inputs()
    if not loss.needs_teacher:
        assert_terms(loss(student, None, labels), name)
        return
    with pytest.raises(ValueError, match=rf"{name} needs the teacher's features \(teacher is None\)"):
        loss(student, None, labels)


@pytest.mark.parametrize("name", LOSSES)
def test_raw_tensors_raise_a_type_error_that_says_how_to_wrap_them(name):
    loss = build(name)
    student, teacher, labels = inputs()
    with pytest.raises(TypeError, match=rf"{name} takes the student's .*Features, got a Tensor.*Features\("):
        loss(student.maps[0], teacher, labels)
    with pytest.raises(TypeError, match=rf"{name} takes the teacher's .*Features, got a Tensor"):
        loss(student, teacher.logits, labels)


@pytest.mark.parametrize("name", LOSSES)
def test_missing_logits_are_needed_only_by_losses_that_read_them(name):
    loss = build(name)
    student, teacher, labels = inputs()
    student, teacher = replace(student, logits=None), replace(teacher, logits=None)
    if "logits" in READS[name][0] | READS[name][1]:
        with pytest.raises(ValueError, match=rf"{name}.* needs the (student|teacher)'s logits"):
            loss(student, teacher, labels)
    else:
        assert_terms(loss(student, teacher, labels), name)


@pytest.mark.parametrize("name", LOSSES)
def test_bf16_inputs_under_cpu_autocast_give_finite_terms(name):
    loss = build(name)
    student, teacher, labels = inputs(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_terms(loss(student, teacher, labels), name)


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_reach_what_the_student_uses_and_never_the_teacher(name):
    loss = build(name)
    student, teacher, labels = inputs()
    sum(loss(student, teacher, labels).values()).backward()
    reads = READS[name][0]
    for field in FIELDS:
        grads = [t.grad for t in tensors(student, field)]
        if field in reads:
            assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: no gradient to {field}"
        else:
            assert all(g is None for g in grads), f"{name} does not read the student's {field}"
    for field in FIELDS:
        assert all(t.grad is None for t in tensors(teacher, field)), (
            f"{name}: gradient to the teacher's {field}"
        )
    trainable = [n for n, p in loss.named_parameters() if p.requires_grad]
    assert [n for n in trainable if loss.get_parameter(n).grad is None] == []


@pytest.mark.parametrize("name", LOSSES)
def test_state_dict_round_trip_reproduces_the_terms(name):
    first, second = build(name, seed=0).eval(), build(name, seed=1).eval()
    second.load_state_dict(first.state_dict())
    student, teacher, labels = inputs()
    want, got = first(student, teacher, labels), second(student, teacher, labels)
    assert list(got) == list(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=f"{name}[{key!r}] after load_state_dict")
