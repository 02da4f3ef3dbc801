"""The shared checks of kdscene.losses.base with hand-worked cases, ``Features`` as the losses see it,
the input checks every ``DistillLoss`` runs before ``forward``, and the table of renamed options."""

import ast
import dataclasses
import inspect
import re
from pathlib import Path
from typing import Literal

import pytest
import torch

import kdscene.losses
from kdscene.losses import DistillLoss, Features, KDLoss, TapInfo
from kdscene.losses.base import (
    as_select,
    check_choice,
    check_probed,
    pool_to_smaller,
    require_logits,
    require_pooled,
    select_taps,
    teacher_choice,
)

# -- option values ---------------------------------------------------------------------------------


def test_check_choice_returns_a_valid_value_and_names_owner_option_choices_and_value():
    mode = Literal["code", "paper"]
    assert check_choice("ATLoss", "mode", "paper", mode) == "paper"
    want = "ATLoss: mode must be one of 'code', 'paper'; got 'x'"
    with pytest.raises(ValueError, match=f"^{re.escape(want)}$"):
        check_choice("ATLoss", "mode", "x", mode)


def test_every_loss_option_check_uses_the_literal_choices():
    with pytest.raises(
        ValueError, match=r"^SRMLoss: targets must be one of 'global-local', 'global', 'local'"
    ):
        kdscene.losses.SRMLoss([], [], targets="both")
    with pytest.raises(
        ValueError, match=r"^DCTAttentionLoss: backend must be one of 'auto', 'matmul', 'fft'"
    ):
        kdscene.losses.DCTAttentionLoss(backend="cuda")


# -- tap selection ---------------------------------------------------------------------------------


def test_select_taps_normalises_negative_indices_and_keeps_the_order():
    assert select_taps(4, None, "L") == (0, 1, 2, 3)
    assert select_taps(4, [-1, 0, -3], "L") == (3, 0, 1)
    assert select_taps(4, 2, "L") == (2,)
    assert select_taps(3, (-3, 2), "L") == (0, 2)


def test_select_taps_out_of_range_names_the_bad_indices_and_the_count():
    want = (
        "VIDLoss: select [3, -4] out of range for 3 tapped maps (indices -3..2; negative ones count from "
        "the end)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(want)}$"):
        select_taps(3, [3, -4, 1], "VIDLoss")
    with pytest.raises(ValueError, match=r"^SemCKDLoss: teacher_select \[0\] out of range for 0 tapped maps"):
        select_taps(0, [0], "SemCKDLoss", "teacher_select")


def test_select_must_be_none_or_a_non_empty_list_of_integers():
    assert as_select(None, "L") is None and as_select([1, -1], "L") == (1, -1) and as_select(0, "L") == (0,)
    with pytest.raises(ValueError, match=r"^SPLoss: select is empty: name at least one tap index"):
        as_select([], "SPLoss")
    with pytest.raises(TypeError, match=r"^SPLoss: select takes integer tap indices, got \[1.5\]"):
        as_select([1.5], "SPLoss")


def test_teacher_selection_defaults_to_the_student_one():
    assert teacher_choice([1, 2], None) == (
        [1, 2],
        "select (teacher_select=None uses it for the teacher too)",
    )
    assert teacher_choice([1, 2], [0]) == ([0], "teacher_select")


# -- size matching ---------------------------------------------------------------------------------


def test_pool_to_smaller_averages_the_taller_student_map_in_blocks():
    s = torch.arange(16.0).reshape(1, 1, 4, 4)
    t = torch.zeros(1, 1, 2, 2)
    ps, pt = pool_to_smaller(s, t)
    # 2×2 blocks of [[0..3], [4..7], [8..11], [12..15]]: (0+1+4+5)/4, (2+3+6+7)/4, (8+9+12+13)/4, ...
    assert ps.tolist() == [[[[2.5, 4.5], [10.5, 12.5]]]] and pt is t


def test_pool_to_smaller_pools_the_teacher_when_it_is_taller_and_keeps_equal_sizes():
    s, t = torch.zeros(1, 1, 1, 1), torch.arange(4.0).reshape(1, 1, 2, 2)
    ps, pt = pool_to_smaller(s, t)
    assert ps is s and pt.tolist() == [[[[1.5]]]]
    same = torch.zeros(1, 1, 2, 2)
    assert all(a is b for a, b in zip(pool_to_smaller(same, t), (same, t)))


def test_pool_to_smaller_compares_heights_so_equal_heights_resize_the_teacher():
    # equal heights, the student wider: the teacher is (adaptive-)pooled to (2, 4), repeating columns
    s, t = torch.zeros(1, 1, 2, 4), torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    ps, pt = pool_to_smaller(s, t)
    assert ps is s and pt.tolist() == [[[[1.0, 1.0, 2.0, 2.0], [3.0, 3.0, 4.0, 4.0]]]]


# -- probed shapes and optional fields -------------------------------------------------------------


def test_check_probed_names_the_loss_the_map_its_probed_and_actual_shape():
    tap = TapInfo("layer2", 4, 8, (4, 4))
    check_probed(torch.zeros(2, 4, 4, 4), tap, "FitNetLoss", "student")
    want = (
        "FitNetLoss: the student map 'layer2' was probed as (B, 4, 4, 4) but is (2, 3, 5, 5); "
        "the loss is built for the shapes probed at construction"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(want)}$"):
        check_probed(torch.zeros(2, 3, 5, 5), tap, "FitNetLoss", "student")
    with pytest.raises(
        ValueError, match=r"teacher level 1 map 'layer2' was probed as \(B, 4, 4, 4\) but is \(2, 4, 4\)"
    ):
        check_probed(torch.zeros(2, 4, 4), tap, "ReviewKDLoss", "teacher level 1")


def test_check_probed_without_size_checks_channels_only():
    tap = TapInfo("layer3", 4, 8, (4, 4))
    check_probed(torch.zeros(2, 4, 7, 7), tap, "VIDLoss", "student", size=False)
    with pytest.raises(
        ValueError, match=r"^VIDLoss: the teacher map 'layer3' was probed as \(B, 4, H, W\) but is"
    ):
        check_probed(torch.zeros(2, 5, 4, 4), tap, "VIDLoss", "teacher", size=False)


def test_require_pooled_and_logits_return_the_tensor_or_name_the_loss_and_side():
    feats = Features(maps=(torch.zeros(2, 3, 1, 1),))
    with pytest.raises(
        ValueError, match=r"^PKTLoss needs the teacher's penultimate vector \(Features.pooled\)"
    ):
        require_pooled(feats, "PKTLoss", "teacher")
    with pytest.raises(ValueError, match=r"^KDLoss needs the student's logits \(Features.logits is None\)"):
        require_logits(feats, "KDLoss", "student")
    vec = torch.ones(2, 3)
    assert require_pooled(Features(pooled=vec), "PKTLoss", "student") is vec
    assert require_logits(Features(logits=vec), "KDLoss", "student") is vec


# -- Features --------------------------------------------------------------------------------------


def test_features_name_unnamed_maps_and_logits_are_optional():
    a, b = torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 1, 1)
    feats = Features(maps=[a, b])
    assert feats.logits is None and feats.pooled is None
    assert feats.names == ("map0", "map1") and feats.maps == (a, b) and isinstance(feats.maps, tuple)
    positional = Features(torch.zeros(1, 5), (a,), ("layer1",), torch.zeros(1, 2))
    assert positional.names == ("layer1",) and positional.pooled.shape == (1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        feats.logits = torch.zeros(1, 5)


def test_features_refuse_names_that_do_not_match_the_maps_and_a_bare_tensor():
    a = torch.zeros(1, 2, 2, 2)
    with pytest.raises(ValueError, match=r"2 names \['x', 'y'\] for 1 maps"):
        Features(maps=(a,), names=("x", "y"))
    with pytest.raises(TypeError, match=r"one Tensor of shape \(1, 2, 2, 2\): write maps=\(x,\)"):
        Features(maps=a)


# -- what every DistillLoss checks before forward --------------------------------------------------


class _Probe(DistillLoss):
    """Records what forward receives."""

    def forward(self, student, teacher, labels):
        self.seen = (student, teacher)
        return {"probe": student.maps[0].sum() * self.weight}


def test_forward_sees_the_student_as_given_and_the_teacher_detached_without_copies():
    loss = _Probe()
    s = Features(maps=(torch.randn(2, 3, 2, 2, requires_grad=True),))
    t_map = torch.randn(2, 3, 2, 2, requires_grad=True)
    t = Features(logits=torch.randn(2, 4, requires_grad=True), maps=(t_map,), pooled=torch.randn(2, 3))
    loss(s, t, None)
    seen_s, seen_t = loss.seen
    assert seen_s is s
    assert not any(x.requires_grad for x in (seen_t.logits, seen_t.maps[0], seen_t.pooled))
    assert seen_t.maps[0].data_ptr() == t_map.data_ptr() and seen_t.names == t.names


def test_raw_tensor_error_points_to_the_wrapper_and_the_functional_form():
    z = torch.zeros(2, 5)
    with pytest.raises(
        TypeError, match=r"KDLoss takes the student's kdscene.losses.Features, got a Tensor of shape \(2, 5\)"
    ):
        KDLoss()(z, Features(logits=z), None)
    with pytest.raises(
        TypeError, match=r"Features\(logits=\.\.\., maps=\(\.\.\.,\).*kdscene\.losses\.kd_divergence"
    ):
        KDLoss()(z, Features(logits=z), None)
    with pytest.raises(TypeError, match=r"_Probe takes the teacher's kdscene.losses.Features, got dict"):
        _Probe()(Features(maps=(z[:, :, None, None],)), {"logits": z}, None)


def test_a_teacherless_loss_accepts_no_teacher_and_a_teacher_loss_refuses_it():
    class _Alone(_Probe):
        needs_teacher = False

    feats = Features(maps=(torch.ones(1, 1, 1, 1),))
    assert _Alone(weight=3.0)(feats, None, None)["probe"].item() == 3.0
    with pytest.raises(ValueError, match=r"^_Probe needs the teacher's features \(teacher is None\)"):
        _Probe()(feats, None, None)


def test_no_assert_statement_in_the_losses():
    """``assert`` vanishes under ``python -O``: the losses raise exceptions with messages instead."""
    root = Path(inspect.getfile(kdscene.losses)).parent
    found = [
        f"{path.name}:{node.lineno}"
        for path in sorted(root.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assert)
    ]
    assert found == []


# -- renamed options -------------------------------------------------------------------------------
