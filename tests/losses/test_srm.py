"""SRM: sizes, top-λ with ties, reconstruction, labels and the stage-2 loss against float64 loop
references; gradients; loading the stage-1 dictionaries from a checkpoint file."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdscene.features import Features, TapInfo
from kdscene.losses import SparseCoder, SRMDictionaryLoss, SRMLoss, keep_top, load_dictionaries, srm_sizes

# ---------------------------------------------------------------- slow references (python loops)


def ref_similarity(x, C, b):
    """S[b][h][w][k] as nested lists of python floats."""
    x, C, b = x.detach(), C.detach(), b.detach()
    B, D, H, W = x.shape
    K = C.shape[1]
    out = [[[[0.0] * K for _ in range(W)] for _ in range(H)] for _ in range(B)]
    for n in range(B):
        for h in range(H):
            for w in range(W):
                for k in range(K):
                    z = sum(float(x[n, d, h, w]) * float(C[d, k]) for d in range(D)) + float(b)
                    out[n][h][w][k] = 1.0 / (1.0 + math.exp(-z))
    return out


def ref_keep(values, lam):
    """Keep the entries >= the lam-th largest of a python list."""
    threshold = sorted(values, reverse=True)[lam - 1]
    return [v if v >= threshold else 0.0 for v in values]


def ref_sparse(x, C, b, lam):
    S = ref_similarity(x, C, b)
    return [[[ref_keep(px, lam) for px in row] for row in img] for img in S], S


def ref_reconstruction(x, C, b, lam):
    St, _ = ref_sparse(x, C, b, lam)
    C = C.detach()
    B, D, H, W = x.shape
    out = torch.zeros(B, D, H, W, dtype=torch.float64)
    for n in range(B):
        for h in range(H):
            for w in range(W):
                for d in range(D):
                    out[n, d, h, w] = sum(St[n][h][w][k] * float(C[d, k]) for k in range(C.shape[1]))
    return out


def ref_labels(x, C, b, lam):
    St, S = ref_sparse(x, C, b, lam)
    B, _, H, W = x.shape
    K = C.shape[1]
    g = torch.zeros(B, K, dtype=torch.float64)
    ell = torch.zeros(B, H, W, dtype=torch.long)
    for n in range(B):
        for h in range(H):
            for w in range(W):
                px = S[n][h][w]
                ell[n, h, w] = px.index(max(px))  # first maximum, like torch.argmax
                for k in range(K):
                    g[n, k] += St[n][h][w][k] / (H * W)
    return g, ell


def ref_student(s, C, b):
    """Pre-sigmoid scores z (B, K, H, W) from loops."""
    s, C, b = s.detach(), C.detach(), b.detach()
    B, D, H, W = s.shape
    z = torch.zeros(B, C.shape[1], H, W, dtype=torch.float64)
    for n in range(B):
        for k in range(C.shape[1]):
            for h in range(H):
                for w in range(W):
                    z[n, k, h, w] = sum(float(s[n, d, h, w]) * float(C[d, k]) for d in range(D)) + float(b)
    return z


# ---------------------------------------------------------------- helpers


def taps(channels, sizes, prefix="l"):
    return [TapInfo(f"{prefix}{i}", c, 1, tuple(sz)) for i, (c, sz) in enumerate(zip(channels, sizes))]


def feats(maps):
    return Features(logits=torch.zeros(maps[0].shape[0], 3), maps=tuple(maps), names=())


def coder64(dim, k, lam):
    return SparseCoder(dim, k, lam).double()


def save_stage1(path, loss, key="srm_dict"):
    state = {f"distill.{key}.{k}": v for k, v in loss.state_dict().items()}
    state["student.fc.weight"] = torch.zeros(2, 2)
    torch.save({"state_dict": state, "epoch": 3}, path)


# ---------------------------------------------------------------- sizes and top-λ


def test_sizes_truncate_like_the_authors_and_zero_sparsity_becomes_one():
    assert srm_sizes(64, 4.0, 0.02) == (256, 5)  # ImageNet level 1: K 256, λ 5 (methods.md 2.3)
    assert srm_sizes(512, 4.0, 0.02) == (2048, 40)
    assert srm_sizes(128, 2.0, 0.02) == (256, 5)  # CIFAR c = 2: [256, 512, 2048] / [5, 10, 40]
    assert srm_sizes(1024, 2.0, 0.02) == (2048, 40)
    assert srm_sizes(63, 1.5, 0.02) == (94, 1)  # K = int(94.5); λ = int(1.89)
    assert srm_sizes(10, 1.0, 0.01) == (10, 1)  # int(0.1) = 0 -> 1
    with pytest.raises(ValueError, match="need 1 <= λ <= K"):
        srm_sizes(8, 1.0, 2.0)
    with pytest.raises(ValueError, match="must be > 0"):
        srm_sizes(8, 0.0, 0.02)


def test_keep_top_keeps_every_tie_at_the_lambda_th_value():
    s = torch.tensor([[0.9, 0.5, 0.1, 0.5, 0.3]], dtype=torch.float64)
    assert keep_top(s, 2).tolist() == [[0.9, 0.5, 0.0, 0.5, 0.0]]  # λ = 2 keeps 3 entries
    assert keep_top(s, 1).tolist() == [[0.9, 0.0, 0.0, 0.0, 0.0]]
    top_tie = torch.tensor([[0.7, 0.2, 0.7]], dtype=torch.float64)
    assert keep_top(top_tie, 1).tolist() == [[0.7, 0.0, 0.7]]
    assert keep_top(s, 5).tolist() == s.tolist()


def test_sparse_code_matches_loop_reference_with_random_and_tied_codewords():
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    coder = coder64(3, 6, 2)
    with torch.no_grad():
        coder.codewords[:, 4] = coder.codewords[:, 1]  # codewords 1 and 4 always tie
    expected, _ = ref_sparse(x, coder.codewords, coder.intercept, 2)
    got = coder.sparse_code(x)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    assert ((got > 0).sum(-1) >= 2).all()


# ---------------------------------------------------------------- reconstruction and labels


@pytest.mark.parametrize("lam", [1, 2, 5])
def test_reconstruction_matches_loop_reference(lam):
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64)
    coder = coder64(4, 5, lam)
    expected = ref_reconstruction(x, coder.codewords, coder.intercept, lam)
    torch.testing.assert_close(coder.reconstruct(x), expected)


def test_labels_are_mean_sparse_code_and_argmax_of_the_similarity():
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    coder = coder64(4, 7, 2)
    g_ref, ell_ref = ref_labels(x, coder.codewords, coder.intercept, 2)
    g, ell = coder.labels(x)
    torch.testing.assert_close(g, g_ref)
    assert torch.equal(ell, ell_ref)
    assert g.shape == (3, 7) and ell.shape == (3, 2, 2)


def test_dictionary_loss_is_sum_of_level_mses():
    t = [torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 5, 2, 2, dtype=torch.float64)]
    loss = SRMDictionaryLoss(taps([3, 5], [(4, 4), (2, 2)]), weight=2.0, codeword_multiplier=2.0).double()
    expected = 0.0
    for coder, x in zip(loss.coders, t):
        rec = ref_reconstruction(x, coder.codewords, coder.intercept, coder.sparsity)
        expected += ((rec - x) ** 2).sum().item() / x.numel()
    out = loss(feats([torch.zeros(2, 1, 1, 1)]), feats(t), torch.zeros(2, dtype=torch.long))
    assert list(out) == ["mse"]
    assert out["mse"].item() == pytest.approx(2.0 * expected, rel=1e-12)
    assert SRMDictionaryLoss.needs_teacher


def test_dictionary_loss_gradcheck():
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    coder = coder64(3, 6, 2)
    torch.testing.assert_close(
        _fn_with(coder, x, coder.codewords, coder.intercept), F.mse_loss(coder.reconstruct(x), x)
    )
    C = coder.codewords.detach().clone().requires_grad_()
    b = coder.intercept.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda C, b: _fn_with(coder, x, C, b), (C, b))


def _fn_with(coder, x, C, b):
    # reconstruction with the parameters passed in (gradcheck perturbs inputs, not module parameters)
    S = torch.sigmoid(torch.einsum("bdhw,dk->bhwk", x, C) + b)
    return F.mse_loss(torch.einsum("bhwk,dk->bdhw", keep_top(S, coder.sparsity), C), x)


# ---------------------------------------------------------------- stage 2


def _stage2(ce_input="sigmoid", targets="global-local", weight=1.0):
    t_taps = taps([4, 6], [(3, 3), (2, 2)], "t")
    s_taps = taps([3, 5], [(3, 3), (2, 2)], "s")
    with pytest.warns(UserWarning, match="random"):
        loss = SRMLoss(
            s_taps,
            t_taps,
            weight=weight,
            codeword_multiplier=1.5,
            sparsity_multiplier=0.3,
            ce_input=ce_input,
            targets=targets,
        )
    return loss.double()


def _reference_stage2(loss, s_maps, t_maps, ce_input):
    bce_sum, ce_sum = 0.0, 0.0
    for coder, pred, s, t in zip(loss.teacher_dicts, loss.predictors, s_maps, t_maps):
        g, ell = ref_labels(t, coder.codewords, coder.intercept, coder.sparsity)
        z = ref_student(s, pred.codewords, pred.intercept)
        P = 1.0 / (1.0 + torch.exp(-z))
        g_hat = P.mean(dim=(2, 3))
        bce_sum = bce_sum + F.binary_cross_entropy(g_hat, g)
        ce_sum = ce_sum + F.cross_entropy(P if ce_input == "sigmoid" else z, ell)
        # the BCE once more by hand
        manual = -(g * g_hat.log() + (1 - g) * (1 - g_hat).log()).mean()
        torch.testing.assert_close(F.binary_cross_entropy(g_hat, g), manual)
    return bce_sum, ce_sum


@pytest.mark.parametrize("ce_input", ["sigmoid", "logits"])
def test_stage2_loss_matches_hand_reference(ce_input):
    loss = _stage2(ce_input, weight=0.5)
    s_maps = [torch.randn(2, 3, 3, 3, dtype=torch.float64), torch.randn(2, 5, 2, 2, dtype=torch.float64)]
    t_maps = [torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 6, 2, 2, dtype=torch.float64)]
    out = loss(feats(s_maps), feats(t_maps), torch.zeros(2, dtype=torch.long))
    bce, ce = _reference_stage2(loss, s_maps, t_maps, ce_input)
    torch.testing.assert_close(out["global"], 0.5 * bce)
    torch.testing.assert_close(out["local"], 0.5 * ce)


def test_sigmoid_ce_input_has_the_documented_floor():
    # σ-activated scores as logits: CE >= log(1 + (K-1)/e) whatever the student does
    loss = _stage2("sigmoid", targets="local")
    s_maps = [
        100 * torch.randn(2, 3, 3, 3, dtype=torch.float64),
        torch.randn(2, 5, 2, 2, dtype=torch.float64),
    ]
    t_maps = [torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 6, 2, 2, dtype=torch.float64)]
    out = loss(feats(s_maps), feats(t_maps), torch.zeros(2, dtype=torch.long))
    floor = sum(math.log(1 + (c.num_codewords - 1) / math.e) for c in loss.teacher_dicts)
    assert list(out) == ["local"] and out["local"].item() >= floor - 1e-9


def test_targets_select_the_terms():
    s_maps = [torch.randn(1, 3, 3, 3, dtype=torch.float64), torch.randn(1, 5, 2, 2, dtype=torch.float64)]
    t_maps = [torch.randn(1, 4, 3, 3, dtype=torch.float64), torch.randn(1, 6, 2, 2, dtype=torch.float64)]
    both = _stage2()(feats(s_maps), feats(t_maps), None)
    assert list(both) == ["global", "local"]
    assert list(_stage2(targets="global")(feats(s_maps), feats(t_maps), None)) == ["global"]
    with pytest.raises(ValueError, match="ce_input must be"):
        SRMLoss(taps([3], [(2, 2)]), taps([4], [(2, 2)]), ce_input="softmax")


@pytest.mark.parametrize("ce_input", ["sigmoid", "logits"])
def test_stage2_gradcheck_student_map_and_predictor(ce_input):
    loss = _stage2(ce_input)
    s_maps = [torch.randn(2, 3, 3, 3, dtype=torch.float64), torch.randn(2, 5, 2, 2, dtype=torch.float64)]
    t_maps = [torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 6, 2, 2, dtype=torch.float64)]
    pred = loss.predictors[0]

    def f(s0, s1, C, b):
        pred.codewords, pred.intercept = C, b  # plain tensors in place of the parameters
        out = loss(feats([s0, s1]), feats(t_maps), None)
        return out["global"] + out["local"]

    C = pred.codewords.detach().clone().requires_grad_()
    b = pred.intercept.detach().clone().requires_grad_()
    del pred.codewords, pred.intercept
    inputs = (s_maps[0].requires_grad_(), s_maps[1].requires_grad_(), C, b)
    assert torch.autograd.gradcheck(f, inputs)


def test_stage2_trains_predictors_not_teacher_dictionaries():
    loss = _stage2()
    assert all(not p.requires_grad for p in loss.teacher_dicts.parameters())
    assert all(p.requires_grad for p in loss.predictors.parameters())
    s_maps = [torch.randn(2, 3, 3, 3, dtype=torch.float64), torch.randn(2, 5, 2, 2, dtype=torch.float64)]
    t_maps = [torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 6, 2, 2, dtype=torch.float64)]
    out = loss(feats(s_maps), feats(t_maps), None)
    sum(out.values()).backward()
    assert all(p.grad is None for p in loss.teacher_dicts.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.predictors.parameters())
    # the predictors have the teacher's K and the student's D
    assert [tuple(p.codewords.shape) for p in loss.predictors] == [(3, 6), (5, 9)]


def test_stage2_runs_under_bf16_autocast():
    loss = _stage2().float()
    s_maps = [torch.randn(2, 3, 3, 3).bfloat16(), torch.randn(2, 5, 2, 2).bfloat16()]
    t_maps = [torch.randn(2, 4, 3, 3).bfloat16(), torch.randn(2, 6, 2, 2).bfloat16()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(feats(s_maps), feats(t_maps), None)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())


def test_level_pairing_needs_same_count_and_size():
    with pytest.raises(ValueError, match="pairs one student tap with one teacher tap"):
        SRMLoss(taps([3], [(2, 2)]), taps([4, 4], [(2, 2), (1, 1)]))
    with pytest.raises(ValueError, match=r"student map is \(4, 4\) but the teacher's is \(2, 2\)"):
        SRMLoss(taps([3], [(4, 4)]), taps([4], [(2, 2)]))


# ---------------------------------------------------------------- stage-1 checkpoint


def test_dictionaries_load_from_a_stage1_checkpoint(tmp_path):
    t_taps = taps([4, 8], [(3, 3), (2, 2)])
    stage1 = SRMDictionaryLoss(t_taps, codeword_multiplier=2.0, sparsity_multiplier=0.2)
    path = tmp_path / "last.ckpt"
    save_stage1(path, stage1)
    loss = SRMLoss(taps([5, 6], [(3, 3), (2, 2)]), t_taps, dictionary=str(path))
    for got, want in zip(loss.teacher_dicts, stage1.coders):
        assert torch.equal(got.codewords, want.codewords) and torch.equal(got.intercept, want.intercept)
        assert (got.num_codewords, got.sparsity) == (want.num_codewords, want.sparsity)
        assert not got.codewords.requires_grad
    assert [c.sparsity for c in loss.teacher_dicts] == [1, 3]  # int(4·0.4) = 1, int(8·0.4) = 3
    assert len(load_dictionaries(path)) == 2
    # agreeing c, s are accepted; disagreeing ones explained
    student = taps([5, 6], [(3, 3), (2, 2)])
    SRMLoss(student, t_taps, dictionary=str(path), codeword_multiplier=2.0, sparsity_multiplier=0.2)
    SRMLoss(student, t_taps, dictionary=str(path), codeword_multiplier=2.0)
    with pytest.raises(ValueError, match=r"has \(K, λ\)=\(8, 1\) but c=4.0, s=0.2 give \(16, 3\)"):
        SRMLoss(student, t_taps, dictionary=str(path), codeword_multiplier=4.0, sparsity_multiplier=0.2)
    with pytest.raises(ValueError, match=r"has \(K, λ\)=\(8, 1\) but c=2.0, s=0.5 give \(8, 4\)"):
        SRMLoss(student, t_taps, dictionary=str(path), codeword_multiplier=2.0, sparsity_multiplier=0.5)
    with pytest.raises(ValueError, match=r"but c=3.0, s=None give \(12, 1\)"):
        SRMLoss(student, t_taps, dictionary=str(path), codeword_multiplier=3.0)


def test_missing_dictionary_key_lists_available_keys(tmp_path):
    t_taps = taps([4], [(2, 2)])
    path = tmp_path / "last.ckpt"
    save_stage1(path, SRMDictionaryLoss(t_taps), key="dict")
    with pytest.raises(KeyError, match=r"no keys starting with 'distill.srm_dict.coders.'.*distill\.dict\."):
        SRMLoss(taps([3], [(2, 2)]), t_taps, dictionary=str(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SRMLoss(taps([3], [(2, 2)]), t_taps, dictionary=str(tmp_path / "nope.ckpt"))


def test_dictionary_that_does_not_fit_the_teacher_is_refused(tmp_path):
    path = tmp_path / "last.ckpt"
    save_stage1(path, SRMDictionaryLoss(taps([4], [(2, 2)])))
    with pytest.raises(ValueError, match="has D=4 but the tap has 8 channels"):
        SRMLoss(taps([3], [(2, 2)]), taps([8], [(2, 2)]), dictionary=str(path))
    with pytest.raises(ValueError, match="has 1 levels but the teacher taps"):
        SRMLoss(taps([3, 3], [(2, 2)] * 2), taps([4, 4], [(2, 2)] * 2), dictionary=str(path))


# ---------------------------------------------------------------- dictionaries in memory


def test_dictionaries_in_memory_are_copied_and_checked():
    t_taps, s_taps = taps([4, 8], [(3, 3), (2, 2)]), taps([5, 6], [(3, 3), (2, 2)])
    stage1 = SRMDictionaryLoss(t_taps, codeword_multiplier=2.0, sparsity_multiplier=0.2)
    loss = SRMLoss(s_taps, t_taps, dictionary=stage1.coders)
    for got, want in zip(loss.teacher_dicts, stage1.coders):
        assert got is not want and torch.equal(got.codewords, want.codewords)
        assert (got.num_codewords, got.sparsity) == (want.num_codewords, want.sparsity)
        assert not got.codewords.requires_grad and want.codewords.requires_grad  # the caller's stay trainable
    with torch.no_grad():
        loss.teacher_dicts[0].codewords.add_(1.0)
    assert not torch.equal(loss.teacher_dicts[0].codewords, stage1.coders[0].codewords)
    with pytest.raises(ValueError, match="has D=4 but the tap has 8 channels"):
        SRMLoss(s_taps[1:], t_taps[1:], dictionary=stage1.coders[:1])
    with pytest.raises(TypeError, match=r"dictionary holds \['Linear'\]"):
        SRMLoss(s_taps[:1], t_taps[:1], dictionary=[torch.nn.Linear(4, 4)])


def test_in_memory_and_checkpoint_dictionaries_give_the_same_loss(tmp_path):
    t_taps, s_taps = taps([4], [(2, 2)]), taps([3], [(2, 2)])
    stage1 = SRMDictionaryLoss(t_taps, codeword_multiplier=2.0)
    save_stage1(tmp_path / "last.ckpt", stage1)
    torch.manual_seed(1)
    from_file = SRMLoss(s_taps, t_taps, dictionary=tmp_path / "last.ckpt")
    torch.manual_seed(1)
    in_memory = SRMLoss(s_taps, t_taps, dictionary=load_dictionaries(tmp_path / "last.ckpt"))
    s, t = feats([torch.randn(2, 3, 2, 2)]), feats([torch.randn(2, 4, 2, 2)])
    torch.testing.assert_close(in_memory(s, t, None), from_file(s, t, None))
