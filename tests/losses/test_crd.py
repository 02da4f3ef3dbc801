"""CRD against a float64 loop reference of the NCE loss (memory bank and queue), hand-worked NCE values,
momentum updates and FIFO order, the Z estimate, the negative draws, state_dict round trips, gradient
checks and errors. The two-rank bank agreement runs in ``test_crd_ddp.py``."""

import math

import numpy as np
import pytest
import torch

from kdscene.losses import CRDLoss, Features, TapInfo, crd_nce_loss

S_DIM, T_DIM, D = 4, 5, 3


def _taps(channels):
    return [TapInfo("layer4", channels, 32, (1, 1))]


def _loss(**kw):
    args = dict(num_samples=6, feat_dim=D, num_negatives=5, negatives="uniform", seed=3)
    args.update(kw)
    return CRDLoss(_taps(S_DIM), _taps(T_DIM), **args).double()


def _feats(pooled, indices=None):
    return Features(pooled=pooled, indices=indices)


def _batch(b=3, seed=0, start=0):
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(b, S_DIM, generator=g, dtype=torch.float64)
    x_t = torch.randn(b, T_DIM, generator=g, dtype=torch.float64)
    return x_s, x_t, torch.arange(start, start + b)


def _unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _embed(linear, x):
    """g(x) = normalise(W x + b), from the head's parameters."""
    w, b = linear.weight.detach().numpy(), linear.bias.detach().numpy()
    return _unit(x.numpy() @ w.T + b)


def _ref_direction(anchors, rows, contrast, tau, n, eps, z):
    """−(1/B) Σ_b [log P₀/(P₀ + K/N + ε) + Σ_k log (K/N)/(P_k + K/N + ε)] by loops; z=None estimates Z."""
    b, k1 = contrast.shape
    e = np.empty((b, k1))
    for i in range(b):
        for j in range(k1):
            dot = sum(anchors[i, d] * rows[contrast[i, j], d] for d in range(anchors.shape[1]))
            e[i, j] = math.exp(dot / tau)
    z = n * e.mean() if z is None else z
    noise = (k1 - 1) / n
    total = 0.0
    for i in range(b):
        p = e[i] / z
        total += math.log(p[0] / (p[0] + noise + eps))
        total += sum(math.log(noise / (p[j] + noise + eps)) for j in range(1, k1))
    return -total / b, z


def test_nce_loss_hand_worked_one_positive_one_negative():
    # K = 1, N = 2: noise K/N = ½; P = (1, ½): −[log(1/1.5) + log(½/1)] = log 3
    assert crd_nce_loss(torch.tensor([[1.0, 0.5]], dtype=torch.float64), 2, eps=0.0).item() == pytest.approx(
        math.log(3.0), rel=1e-12
    )


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_memory_bank_loss_matches_a_float64_loop_reference(mode):
    loss = _loss(mode=mode, weight=0.7)
    x_s, x_t, idx = _batch()
    contrast = loss.contrast_indices(idx).numpy()
    bank_s, bank_t = loss.store.student.numpy().copy(), loss.store.teacher.numpy().copy()
    s, t = _embed(loss.embed_s.linear, x_s), _embed(loss.embed_t.linear, x_t)
    z = None if mode == "code" else 1.0
    want_s, z_s = _ref_direction(s, bank_t, contrast, 0.07, 6, 1e-7, z)
    want_t, z_t = _ref_direction(t, bank_s, contrast, 0.07, 6, 1e-7, z)
    got = loss(_feats(x_s, idx), _feats(x_t, idx), None)["crd"].item()
    assert got == pytest.approx(0.7 * (want_s + want_t), rel=1e-9)
    assert loss.normaliser.tolist() == pytest.approx([z_s, z_t], rel=1e-12)
    assert (contrast[:, 0] == idx.numpy()).all() and contrast.shape == (3, 6)


def test_queue_loss_matches_a_float64_loop_reference():
    loss = _loss(bank="queue", queue_size=4, num_samples=None)
    x_s, x_t, _ = _batch()
    queue_s, queue_t = loss.store.student.numpy().copy(), loss.store.teacher.numpy().copy()
    s, t = _embed(loss.embed_s.linear, x_s), _embed(loss.embed_t.linear, x_t)
    # rows: the other side's embedding of the same sample, then every queue row; N = Q when not given
    contrast = np.array([[i, 3, 4, 5, 6] for i in range(3)])
    want_s, _ = _ref_direction(s, np.concatenate([t, queue_t]), contrast, 0.07, 4, 1e-7, None)
    want_t, _ = _ref_direction(t, np.concatenate([s, queue_s]), contrast, 0.07, 4, 1e-7, None)
    got = loss(_feats(x_s), _feats(x_t), None)["crd"].item()
    assert got == pytest.approx(0.8 * (want_s + want_t), rel=1e-9)


def _identity_heads(loss):
    for embed in (loss.embed_s, loss.embed_t):
        embed.linear.weight.data = torch.eye(*embed.linear.weight.shape, dtype=torch.float64)
        embed.linear.bias.data.zero_()


@pytest.mark.parametrize("momentum", [0.5, 0.75])
def test_momentum_update_of_the_positives_rows_hand_worked(momentum):
    loss = CRDLoss(
        _taps(2), _taps(2), num_samples=4, feat_dim=2, momentum=momentum, negatives="uniform"
    ).double()
    _identity_heads(loss)  # s = x / ‖x‖
    loss.store.student.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]]))
    before = loss.store.student.clone()
    x = torch.tensor([[0.0, 3.0], [5.0, 0.0]], dtype=torch.float64)  # unit (0, 1) and (1, 0)
    loss(_feats(x, torch.tensor([0, 2])), _feats(x.clone(), torch.tensor([0, 2])), None)
    m = momentum
    row0 = torch.tensor([m, 1 - m], dtype=torch.float64) / math.hypot(m, 1 - m)  # m·(1,0) + (1−m)·(0,1)
    row2 = torch.tensor([0.6 * m + 1 - m, 0.8 * m], dtype=torch.float64)
    row2 = row2 / row2.norm()
    torch.testing.assert_close(loss.store.student[0], row0)
    torch.testing.assert_close(loss.store.student[2], row2)
    torch.testing.assert_close(loss.store.student[[1, 3]], before[[1, 3]])  # not in the batch: unchanged


def test_a_repeated_index_updates_its_row_once_with_its_first_embedding():
    loss = CRDLoss(_taps(2), _taps(2), num_samples=3, feat_dim=2, momentum=0.5, negatives="uniform").double()
    _identity_heads(loss)
    loss.store.teacher.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    loss(_feats(x, torch.tensor([1, 1])), _feats(x.clone(), torch.tensor([1, 1])), None)
    half = 1 / math.sqrt(2.0)
    torch.testing.assert_close(loss.store.teacher[1], torch.tensor([half, half], dtype=torch.float64))


def test_queue_is_first_in_first_out():
    loss = CRDLoss(_taps(2), _taps(2), feat_dim=2, bank="queue", queue_size=5).double()
    _identity_heads(loss)
    angles = torch.arange(6, dtype=torch.float64) * 0.3
    units = torch.stack([angles.cos(), angles.sin()], dim=1)
    for step in range(3):
        x = units[2 * step : 2 * step + 2]
        loss(_feats(x * 2.0), _feats(-x), None)
    # rows 0,1 ← batch 1; 2,3 ← batch 2; 4, then 0 again ← batch 3
    torch.testing.assert_close(loss.store.student, units[[5, 1, 2, 3, 4]])
    torch.testing.assert_close(loss.store.teacher, -units[[5, 1, 2, 3, 4]])
    assert int(loss.store.pointer) == 1
    fresh = torch.stack([(angles + 2.0).cos(), (angles + 2.0).sin()], dim=1)
    loss(_feats(fresh * 3.0), _feats(fresh), None)  # six rows, more than the queue: the last five, in order
    torch.testing.assert_close(loss.store.student, fresh[[5, 1, 2, 3, 4]])  # written at rows 1, 2, 3, 4, 0
    assert int(loss.store.pointer) == 1


def test_z_is_estimated_once_from_the_first_training_batch():
    loss = _loss()
    x_s, x_t, idx = _batch()
    loss.eval()  # evaluation before training estimates Z for its own use, stores nothing
    loss(_feats(x_s, idx), _feats(x_t, idx), None)
    assert loss.normaliser.tolist() == [-1.0, -1.0]
    loss.train()
    loss(_feats(x_s, idx), _feats(x_t, idx), None)
    first = loss.normaliser.clone()
    assert (first > 0).all()
    loss(*(_feats(x, torch.tensor([3, 4, 5])) for x in _batch(seed=1)[:2]), None)
    torch.testing.assert_close(loss.normaliser, first)
    assert _loss(mode="paper").normaliser.tolist() == [1.0, 1.0]


def test_draws_are_reproducible_and_advance_with_each_training_step():
    loss = _loss(num_samples=50, num_negatives=40)
    idx = torch.arange(3)
    first = loss.contrast_indices(idx)
    assert torch.equal(first, loss.contrast_indices(idx))
    assert torch.equal(first, _loss(num_samples=50, num_negatives=40).contrast_indices(idx))  # same seed
    x_s, x_t, _ = _batch()
    loss(_feats(x_s, idx), _feats(x_t, idx), None)
    assert not torch.equal(first, loss.contrast_indices(idx))
    assert int(loss.draws[1]) == 1


def test_other_class_negatives_avoid_the_anchors_label_and_reach_every_other_sample():
    loss = _loss(num_samples=10, num_negatives=3000, negatives="other_class")
    loss.store.labels.copy_(torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, -1, -1]))  # -1: not seen yet
    loss.store._sorted = None
    rows = loss.contrast_indices(torch.tensor([4, 0]), torch.tensor([1, 0]))
    assert set(rows[0, 1:].tolist()) == {0, 1, 2, 6, 7, 8, 9}
    assert set(rows[1, 1:].tolist()) == {3, 4, 5, 6, 7, 8, 9}
    counts = torch.bincount(rows[0, 1:], minlength=10)[[0, 1, 2, 6, 7, 8, 9]].double()
    assert counts.min() > 3000 / 7 * 0.8  # uniform over the 7 eligible samples


def test_training_learns_the_labels_of_the_whole_batch_before_drawing():
    loss = _loss(num_samples=4, num_negatives=200, negatives="other_class")
    x_s, x_t, _ = _batch(b=4)
    labels = torch.tensor([0, 0, 1, 1])
    loss(_feats(x_s, torch.arange(4)), _feats(x_t, torch.arange(4)), labels)
    assert loss.store.labels.tolist() == [0, 0, 1, 1]
    rows = loss.contrast_indices(torch.tensor([0]), torch.tensor([0]))
    assert set(rows[0, 1:].tolist()) == {2, 3}
    loss.store.labels.fill_(0)
    loss.store._sorted = None
    with pytest.raises(ValueError, match="no negative to draw"):
        loss.contrast_indices(torch.tensor([0]), torch.tensor([0]))


@pytest.mark.parametrize("bank", ["memory", "queue"])
def test_state_dict_round_trip_restores_banks_normaliser_and_draws(bank):
    kw = dict(bank=bank, queue_size=4, negatives="other_class")
    first, second = _loss(seed=1, **kw), _loss(seed=2, **kw)
    for step in range(2):
        x_s, x_t, idx = _batch(seed=step, start=2 * step)
        first(_feats(x_s, idx), _feats(x_t, idx), torch.tensor([0, 1, 0]))
    state = first.state_dict()
    assert {"store.student", "store.teacher", "normaliser", "draws"} <= set(state)
    second.load_state_dict(state)
    x_s, x_t, idx = _batch(seed=5, start=1)
    labels = torch.tensor([1, 0, 1])
    want = first(_feats(x_s, idx), _feats(x_t, idx), labels)["crd"]
    got = second(_feats(x_s, idx), _feats(x_t, idx), labels)["crd"]
    torch.testing.assert_close(got, want)
    for key, value in first.state_dict().items():
        torch.testing.assert_close(second.state_dict()[key], value, msg=key)


def test_evaluation_without_indices_is_zero_and_keeps_the_heads_in_the_graph():
    loss = _loss().eval()
    x_s, x_t, _ = _batch()
    out = loss(_feats(x_s), _feats(x_t), None)["crd"]
    assert out.item() == 0.0
    out.backward()
    assert all(p.grad is not None for p in loss.parameters())


def test_gradient_check_on_the_student_vector_and_the_teacher_head():
    loss = _loss().eval()
    loss.normaliser.copy_(torch.tensor([3.0, 5.0]))  # a fixed Z: the estimate is not differentiated
    x_s, x_t, idx = _batch()
    x_s.requires_grad_()
    weight = loss.embed_t.linear.weight.detach().clone().requires_grad_()

    def f(s, w):
        args = (_feats(s, idx), _feats(x_t, idx), None)
        return torch.func.functional_call(loss, {"embed_t.linear.weight": w}, args)["crd"]

    assert torch.autograd.gradcheck(f, (x_s, weight))
    scores = (torch.rand(3, 4, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: crd_nce_loss(p, 7), (scores,))


def test_queue_gradient_reaches_the_student_through_its_own_anchors_only():
    # the teacher-anchored term sees s only as its detached positive: d loss / d x_s is the derivative of
    # the student-anchored term alone, here by central differences of the loop reference
    loss = _loss(bank="queue", queue_size=4, num_samples=None, weight=1.0).eval()
    loss.normaliser.copy_(torch.tensor([3.0, 5.0]))
    x_s, x_t, _ = _batch()
    x_s.requires_grad_()
    loss(_feats(x_s), _feats(x_t), None)["crd"].backward()
    t, queue_t = _embed(loss.embed_t.linear, x_t), loss.store.teacher.numpy()
    contrast = np.array([[i, 3, 4, 5, 6] for i in range(3)])

    def student_term(x):
        s = _embed(loss.embed_s.linear, torch.from_numpy(x))
        return _ref_direction(s, np.concatenate([t, queue_t]), contrast, 0.07, 4, 1e-7, 3.0)[0]

    x, h, numeric = x_s.detach().numpy().copy(), 1e-6, np.zeros(x_s.shape)
    for i, j in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[i, j] += h
        down[i, j] -= h
        numeric[i, j] = (student_term(up) - student_term(down)) / (2 * h)
    np.testing.assert_allclose(x_s.grad.numpy(), numeric, rtol=1e-6, atol=1e-8)


def test_needs_indices_only_for_the_memory_bank():
    assert _loss().needs_indices
    assert not _loss(bank="queue", num_samples=None).needs_indices


def test_crd_errors_explain_what_is_missing():
    with pytest.raises(ValueError, match="needs num_samples"):
        CRDLoss(_taps(4), _taps(4))
    with pytest.raises(ValueError, match="bank must be one of"):
        CRDLoss(_taps(4), _taps(4), num_samples=4, bank="disk")
    with pytest.raises(ValueError, match="momentum must be in"):
        CRDLoss(_taps(4), _taps(4), num_samples=4, momentum=1.0)
    with pytest.raises(ValueError, match="student_dim is None and there are no student taps"):
        CRDLoss([], _taps(4), num_samples=4)
    loss = _loss()
    x_s, x_t, idx = _batch()
    with pytest.raises(ValueError, match=r"needs the training batch's dataset indices"):
        loss(_feats(x_s), _feats(x_t), None)
    with pytest.raises(ValueError, match=r"student's pooled vector has 7 features .* set student_dim=7"):
        loss(_feats(torch.randn(3, 7, dtype=torch.float64), idx), _feats(x_t, idx), None)
    with pytest.raises(ValueError, match="needs the batch's labels"):
        _loss(negatives="other_class")(_feats(x_s, idx), _feats(x_t, idx), None)
