"""FAM-KD against float64 references: explicit DFT matrices, the authors' roll-based fftshift, loop
self-attention, hand-written fusion levels and the whole loss under a two-epoch warm-up."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch

from kdscene.callbacks import LossWeightWarmup
from kdscene.losses import FAMFusion, FAMKDLoss, FAMModule, Features, LocalSelfAttention, TapInfo
from tests.losses import nn_reference as ref

# -- references ------------------------------------------------------------------------------------


def _dft(n: int) -> np.ndarray:
    """Unitary DFT matrix F[u, m] = exp(−2πi·u·m/n)/√n (symmetric)."""
    u = np.arange(n)
    return np.exp(-2j * np.pi * np.outer(u, u) / n) / math.sqrt(n)


def _authors_shift(y: np.ndarray, axis: int, inverse: bool) -> np.ndarray:
    """The authors' roll_n: forward shift by n//2 (+1 if n is odd) to the left, inverse by n//2."""
    n = y.shape[axis]
    k = n // 2 if inverse else n // 2 + n % 2
    index = [(i + k) % n for i in range(n)]
    return np.take(y, index, axis=axis)


def _high_pass(y: np.ndarray, cuton: float) -> np.ndarray:
    h, w = y.shape[-2:]
    s = _authors_shift(_authors_shift(y, -2, False), -1, False)
    cy, cx = int(h / 2), int(w / 2)
    rh, rw = int(cuton * cy), int(cuton * cx)
    s = s.copy()
    s[..., cy - rh : cy + rh, cx - rw : cx + rw] = 0
    return _authors_shift(_authors_shift(s, -1, True), -2, True)


def ref_fam(fam: FAMModule, x: np.ndarray, cuton: float) -> np.ndarray:
    """γ1·Re IDFT(HPF(Σ_i DFT(x_i)·K_io)) + γ2·(W0 x + b0), with explicit DFT matrices."""
    h, w = x.shape[-2:]
    fh, fw = _dft(h), _dft(w)
    kw = ref.arr(fam.weight)
    kernel = kw[..., 0] + 1j * kw[..., 1]
    if fam.global_filter == "full":
        spec = np.einsum("uh,bihw,vw->biuv", fh, x, fw)
        spec = np.einsum("biuv,iouv->bouv", spec, kernel)
    else:
        xp = ref.conv1x1(x, fam.project) if fam.project is not None else x
        spec = np.einsum("uh,bihw,vw->biuv", fh, xp, fw) * kernel[None]
    spec = _high_pass(spec, cuton)
    glob = np.einsum("hu,bouv,wv->bohw", fh.conj(), spec, fw.conj()).real
    return ref.arr(fam.gamma1) * glob + ref.arr(fam.gamma2) * ref.conv1x1(x, fam.local)


def ref_attention(att: LocalSelfAttention, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Loops over samples, channels, positions and the 3×3 window (zero padding)."""
    q, k, v = ref.conv1x1(y, att.query), ref.conv1x1(x, att.key), ref.conv1x1(x, att.value)
    rel_h, rel_w = ref.arr(att.rel_h), ref.arr(att.rel_w)
    b, c, h, w = x.shape
    half, out = c // 2, np.zeros_like(x)
    for n in range(b):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    logits, values = [], []
                    for di in range(3):
                        for dj in range(3):
                            ii, jj = i + di - 1, j + dj - 1
                            inside = 0 <= ii < h and 0 <= jj < w
                            key = k[n, ch, ii, jj] if inside else 0.0
                            key += rel_h[ch, di] if ch < half else rel_w[ch - half, dj]
                            logits.append(q[n, ch, i, j] * key)
                            values.append(v[n, ch, ii, jj] if inside else 0.0)
                    p = np.exp(np.array(logits) - max(logits))
                    out[n, ch, i, j] = (p / p.sum()) @ np.array(values)
    return out


def _conv_bn_relu(x, seq, train):
    return ref.relu(ref.batch_norm(ref.conv1x1(x, seq[0]), seq[1], train))


def ref_fusion(fusion: FAMFusion, x, residual, train: bool, cuton: float = 0.1):
    if fusion.reduce is not None:
        x = _conv_bn_relu(x, fusion.reduce, train)
    if fusion.attention is not None:
        if fusion.residual is not None:
            residual = _conv_bn_relu(residual, fusion.residual, train)
        x = ref_attention(fusion.attention, x, ref.nearest(residual, x.shape[-2:]))
    if x.shape[-2:] != fusion.out_size:
        x = ref.nearest(x, fusion.out_size)
    fam, bn = fusion.output[0], fusion.output[1]
    return ref.relu(ref.batch_norm(ref_fam(fam, x, cuton), bn, train)), x


# -- FAM module ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "cuton", "zeroed"),
    [((8, 8), 0.5, (4, 4)), ((7, 9), 0.5, (2, 4)), ((20, 22), 0.1, (2, 2)), ((8, 8), 0.1, (0, 0))],
)
@pytest.mark.parametrize("global_filter", ["full", "depthwise"])
def test_fam_module_matches_explicit_dft_reference(size, cuton, zeroed, global_filter):
    fam = FAMModule(3, 4, size, cuton=cuton, global_filter=global_filter).double()
    with torch.no_grad():
        fam.gamma1.fill_(0.7), fam.gamma2.fill_(-0.4)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    want = ref_fam(fam, ref.arr(x), cuton)
    np.testing.assert_allclose(ref.arr(fam(x)), want, rtol=1e-9, atol=1e-11)
    assert int((fam.mask == 0).sum()) == zeroed[0] * zeroed[1]
    no_hpf = ref_fam(fam, ref.arr(x), 0.0)
    assert (np.abs(want - no_hpf).max() > 1e-3) == (zeroed != (0, 0))


def test_fam_without_high_pass_is_a_per_frequency_channel_mix():
    """cuton 0 and K = δ_io: the global branch is the identity, so FAM = γ1·x + γ2·conv(x)."""
    fam = FAMModule(3, 3, 6, cuton=0.0).double()
    with torch.no_grad():
        fam.weight.zero_()
        fam.weight[..., 0] = torch.eye(3, dtype=torch.float64)[:, :, None, None]
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(fam(x), 0.5 * x + 0.5 * fam.local(x))


def test_fam_filter_is_real_storage_with_the_authors_init():
    torch.manual_seed(0)
    fam = FAMModule(8, 16, (5, 6))
    assert fam.weight.dtype == torch.float32 and fam.weight.shape == (8, 16, 5, 6, 2)
    assert fam.num_filter_weights == 8 * 16 * 30
    scaled = fam.weight.detach() * (8 * 16)
    assert float(scaled.min()) >= 0.0 and float(scaled.max()) < 1.0
    assert abs(float(scaled.mean()) - 0.5) < 0.02  # U[0,1) real and imaginary parts
    assert fam.gamma1.item() == fam.gamma2.item() == 0.5
    assert "mask" not in fam.state_dict()
    depthwise = FAMModule(8, 16, (5, 6), global_filter="depthwise")
    assert depthwise.weight.shape == (16, 5, 6, 2) and depthwise.project is not None


def test_fam_runs_its_fft_in_float32_under_autocast():
    fam = FAMModule(4, 4, 7)
    x = torch.randn(2, 4, 7, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fam(x)
        glob = fam.global_branch(x.bfloat16())
    assert out.dtype == torch.float32 and glob.dtype == torch.float32
    torch.testing.assert_close(out, fam(x), rtol=0.05, atol=0.05)


def test_fam_gradcheck_input_and_filter():
    fam = FAMModule(2, 3, 6, cuton=0.5).double()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    w = fam.weight.detach().clone().requires_grad_(True)

    def run(x, w):
        return torch.func.functional_call(fam, {"weight": w}, (x,))

    assert torch.autograd.gradcheck(run, (x, w))


def test_fam_module_rejects_wrong_input_size():
    with pytest.raises(ValueError, match=r"\(B, 3, 7, 7\).*got \(1, 3, 8, 8\)"):
        FAMModule(3, 4, 7)(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="global_filter"):
        FAMModule(3, 4, 7, global_filter="diagonal")


# -- local self-attention --------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [4, 5])
def test_local_attention_matches_loop_reference(channels):
    att = LocalSelfAttention(channels).double()
    x = torch.randn(2, channels, 3, 4, dtype=torch.float64)
    y = torch.randn(2, channels, 3, 4, dtype=torch.float64)
    np.testing.assert_allclose(ref.arr(att(x, y)), ref_attention(att, ref.arr(x), ref.arr(y)), rtol=1e-10)


def test_local_attention_gradcheck():
    att = LocalSelfAttention(4).double()
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(att, (x, y))


# -- fusion level ----------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("out_size", [(4, 4), (3, 3)])
def test_fusion_level_matches_reference_in_train_and_eval(train, out_size):
    g = torch.Generator().manual_seed(1)
    fusion = FAMFusion(3, 4, 5, out_size, residual_channels=6).double()
    ref.randomise_batch_norms(fusion, g)
    fusion.train(train)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    residual = torch.randn(2, 6, 2, 2, dtype=torch.float64)
    out, fused = fusion(x, residual)
    want_out, want_fused = ref_fusion(fusion, ref.arr(x), ref.arr(residual), train)
    np.testing.assert_allclose(ref.arr(out), want_out, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ref.arr(fused), want_fused, rtol=1e-8, atol=1e-10)


def test_fusion_builds_projections_only_when_widths_differ():
    same = FAMFusion(4, 4, 4, 2, residual_channels=4)
    assert same.reduce is None and same.residual is None and same.attention is not None
    deepest = FAMFusion(4, 8, 4, 1)
    assert deepest.reduce is not None and deepest.residual is None and deepest.attention is None
    with pytest.raises(ValueError, match="residual"):
        same(torch.randn(1, 4, 2, 2))


# -- the loss --------------------------------------------------------------------------------------

S_TAPS = [TapInfo("a", 4, 1, (4, 4)), TapInfo("b", 6, 2, (2, 2))]
T_TAPS = [TapInfo("a", 3, 1, (5, 5)), TapInfo("b", 5, 2, (2, 2))]


def _features(taps, batch=2, pooled=True, dtype=torch.float64):
    maps = tuple(torch.randn(batch, t.channels, *t.size, dtype=dtype) for t in taps)
    vec = torch.randn(batch, taps[-1].channels, dtype=dtype) if pooled else None
    return Features(torch.zeros(batch, 3), maps, tuple(t.name for t in taps), vec)


class _Trainer:
    def __init__(self, epoch):
        self.current_epoch = epoch


class _Module:
    def __init__(self, loss):
        self.distill = torch.nn.ModuleDict({"fam": loss})

    def log(self, *args, **kwargs):
        pass


def ref_fam_kd(loss: FAMKDLoss, student: Features, teacher: Features, weight: float, cuton: float) -> float:
    """weight · Σ MSE over the levels (pooled, b, a), every level recomputed by the references."""
    xs = [ref.arr(student.pooled)[:, :, None, None], *[ref.arr(m) for m in reversed(student.maps)]]
    ts = [ref.arr(teacher.pooled)[:, :, None, None], *[ref.arr(m) for m in reversed(teacher.maps)]]
    total, residual = 0.0, None
    for x, t, fusion in zip(xs, ts, loss.fusions):
        out, residual = ref_fusion(fusion, x, residual, train=True, cuton=cuton)
        total += ((out - t) ** 2).mean()
    return weight * total


@pytest.mark.parametrize("epoch", [0, 1])
def test_full_loss_under_two_epoch_warmup_matches_reference(epoch):
    loss = FAMKDLoss(S_TAPS, T_TAPS, weight=2.0, cuton=0.5).double().train()
    ref.randomise_batch_norms(loss, torch.Generator().manual_seed(2))
    LossWeightWarmup(warmup_epochs=2, terms=["fam"]).on_train_epoch_start(_Trainer(epoch), _Module(loss))
    student, teacher = _features(S_TAPS), _features(T_TAPS)
    want = ref_fam_kd(loss, student, teacher, 2.0 * (epoch + 1) / 2, cuton=0.5)
    got = loss(student, teacher, None)["fam"]
    assert got.item() == pytest.approx(want, rel=1e-9)


def test_pooled_modes_and_derived_pooled_vector():
    student, teacher = _features(S_TAPS), _features(T_TAPS)
    full = FAMKDLoss(S_TAPS, T_TAPS).double()
    residual = FAMKDLoss(S_TAPS, T_TAPS, pooled="residual").double()
    missing = residual.load_state_dict(full.state_dict(), strict=False).unexpected_keys
    assert missing and all(k.startswith("fusions.0.output") for k in missing)
    outputs = full.fuse(student)
    pooled_term = torch.mean((outputs[0] - teacher.pooled[:, :, None, None]) ** 2)
    torch.testing.assert_close(
        residual(student, teacher, None)["fam"], full(student, teacher, None)["fam"] - pooled_term
    )
    off = FAMKDLoss(S_TAPS, T_TAPS, pooled="off")
    assert len(off.fusions) == 2 and off.fusions[0].attention is None
    no_vec = Features(student.logits, student.maps, student.names, None)
    derived = Features(student.logits, student.maps, student.names, student.maps[-1].mean((2, 3)))
    torch.testing.assert_close(full(no_vec, teacher, None)["fam"], full(derived, teacher, None)["fam"])


def test_loss_errors_are_clear():
    with pytest.raises(ValueError, match="pair up one to one"):
        FAMKDLoss(S_TAPS, T_TAPS[:1])
    with pytest.raises(ValueError, match="mid_channels has 2 entries but there are 3 levels"):
        FAMKDLoss(S_TAPS, T_TAPS, mid_channels=[4, 6])
    loss = FAMKDLoss(S_TAPS, T_TAPS).double()
    wrong = _features([S_TAPS[0], TapInfo("b", 6, 2, (3, 3))])
    with pytest.raises(ValueError, match=r"student level 1 map 'b' was probed as \(B, 6, 2, 2\)"):
        loss(wrong, _features(T_TAPS), None)


def test_parameter_count_of_the_authors_imagenet_config_without_allocating():
    """ResNet-34 -> ResNet-18 at 224 px: 51.6M complex filter weights (the issue's figure)."""
    taps = [
        TapInfo(f"layer{i + 1}", c, 4 * 2**i, (56 >> i, 56 >> i)) for i, c in enumerate([64, 128, 256, 512])
    ]
    with torch.device("meta"):
        full = FAMKDLoss(taps, taps)
        depthwise = FAMKDLoss(taps, taps, global_filter="depthwise")
    by_hand = sum(c * c * (56 >> i) ** 2 for i, c in enumerate([64, 128, 256, 512])) + 512 * 512
    assert full.num_filter_weights == by_hand == 51_642_368
    assert (
        depthwise.num_filter_weights
        == sum(c * (56 >> i) ** 2 for i, c in enumerate([64, 128, 256, 512])) + 512
    )
    assert full.num_parameters == sum(p.numel() for p in full.parameters()) > 2 * by_hand


# -- optimisation, checkpoints, DDP ----------------------------------------------------------------


def test_optimizers_step_the_real_stored_filter():
    fam = FAMModule(2, 2, 6, cuton=0.5)
    x, target = torch.randn(4, 2, 6, 6), torch.randn(4, 2, 6, 6)
    loss = torch.nn.functional.mse_loss(fam(x), target)
    loss.backward()
    before, grad = fam.weight.detach().clone(), fam.weight.grad.clone()
    torch.optim.SGD(fam.parameters(), lr=0.1).step()
    torch.testing.assert_close(fam.weight.detach(), before - 0.1 * grad)
    opt = torch.optim.Adam(fam.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        step_loss = torch.nn.functional.mse_loss(fam(x), target)
        step_loss.backward()
        opt.step()
        losses.append(step_loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert opt.state[fam.weight]["exp_avg"].dtype == torch.float32


def _train_steps(loss, opt, student, teacher, n=3):
    for _ in range(n):
        opt.zero_grad()
        loss(student, teacher, None)["fam"].backward()
        opt.step()


def test_checkpoint_round_trip_of_loss_and_optimizer_state(tmp_path):
    student, teacher = _features(S_TAPS, dtype=torch.float32), _features(T_TAPS, dtype=torch.float32)
    loss = FAMKDLoss(S_TAPS, T_TAPS)
    opt = torch.optim.SGD(loss.parameters(), lr=0.01, momentum=0.9)
    _train_steps(loss, opt, student, teacher)
    torch.save({"loss": loss.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt")
    assert all(not v.is_complex() for v in state["loss"].values())
    torch.manual_seed(123)
    restored = FAMKDLoss(S_TAPS, T_TAPS)
    restored.load_state_dict(state["loss"])
    restored_opt = torch.optim.SGD(restored.parameters(), lr=0.01, momentum=0.9)
    restored_opt.load_state_dict(state["opt"])
    torch.testing.assert_close(restored(student, teacher, None), loss(student, teacher, None))
    _train_steps(loss, opt, student, teacher, 1)
    _train_steps(restored, restored_opt, student, teacher, 1)
    for a, b in zip(loss.parameters(), restored.parameters()):
        torch.testing.assert_close(a, b)


class FilterAgreement(L.Callback):
    """Gather each rank's FAM filters at the end of training (and keep rank 0's at the start)."""

    def __init__(self, out):
        self.out = out

    @staticmethod
    def _filters(module):
        return torch.cat(
            [p.detach().flatten() for n, p in module.distill.named_parameters() if "weight" in n]
        )

    def on_train_start(self, trainer, module):
        self.start = self._filters(module).clone()

    def on_train_end(self, trainer, module):
        gathered = module.all_gather(self._filters(module))
        if trainer.is_global_zero:
            torch.save({"ranks": gathered.cpu(), "start": self.start, "world": trainer.world_size}, self.out)


@pytest.mark.slow
def test_ddp_two_processes_keep_the_complex_filters_in_sync(tmp_path):
    from kdscene.losses import CrossEntropyLoss
    from kdscene.models import BackboneSpec
    from kdscene.module import DistillationModule
    from tests.helpers import TinyDataModule, tiny_trainer

    module = DistillationModule(
        student=BackboneSpec("cifar_resnet8", 3),
        teacher=BackboneSpec("cifar_resnet14", 3),
        distill={"ce": partial(CrossEntropyLoss), "fam": partial(FAMKDLoss, weight=1.0, cuton=0.5)},
        optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        image_size=16,
    )
    out = tmp_path / "ranks.pt"
    trainer = tiny_trainer(
        tmp_path, strategy="ddp_spawn", devices=2, max_epochs=1, callbacks=[FilterAgreement(out)]
    )
    trainer.fit(module, datamodule=TinyDataModule(n=32, image_size=16))
    result = torch.load(out)
    assert result["world"] == 2
    assert torch.equal(result["ranks"][0], result["ranks"][1])
    assert not torch.equal(result["ranks"][0], result["start"])  # the filters did train


@pytest.mark.parametrize("pooled", ["loss", "residual", "off"])
def test_every_parameter_gets_a_gradient(pooled):
    """DDP without find_unused_parameters needs a gradient for every parameter the loss owns."""
    loss = FAMKDLoss(S_TAPS, T_TAPS, pooled=pooled).double()
    loss(_features(S_TAPS), _features(T_TAPS), None)["fam"].backward()
    assert [n for n, p in loss.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []
