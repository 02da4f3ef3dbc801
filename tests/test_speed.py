"""Speed options are correct on CPU: channels-last, bf16 autocast (teacher inside it, under no_grad),
torch.compile with working taps (and its fallback), and the device defaults of the trainer configs."""

from __future__ import annotations

import warnings

import pytest
import torch

from kdscene.cli.config import compose_config
from kdscene.features import FeatureTap
from kdscene.models import BackboneSpec, build_backbone, compile_network
from tests.helpers import TinyDataModule, make_module, tiny_trainer


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 3, (8,), generator=g)


def _terms(module, images, labels):
    return {k: v.detach() for k, v in module.loss_terms(*module.features(images), labels).items()}


def test_channels_last_gives_the_losses_of_nchw_within_float32_reordering():
    images, labels = _batch()
    torch.manual_seed(0)
    nchw = make_module("at_kd")
    torch.manual_seed(0)
    last = make_module("at_kd", channels_last=True)
    last.configure_model()
    assert last.student.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert last.teacher.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    want = _terms(nchw, images, labels)
    got = _terms(last, images.contiguous(memory_format=torch.channels_last), labels)
    assert got.keys() == want.keys() == {"ce", "kd", "at"}
    for name in want:  # the same float32 arithmetic summed in another order: ~1e-6 relative
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7)


class AutocastProbe(torch.nn.Module):
    """Records, for each call of the teacher's classifier, its output dtype, grad mode and autocast state."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.dtype, bool, bool]] = []

    def __call__(self, module, args, output) -> None:
        self.calls.append((output.dtype, torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")))


def test_bf16_mixed_runs_the_teacher_inside_the_steps_autocast_under_no_grad(tmp_path):
    module = make_module("at_kd")
    probe = AutocastProbe()
    module.teacher.fc.register_forward_hook(probe)
    trainer = tiny_trainer(
        tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0, precision="bf16-mixed"
    )
    trainer.fit(module, datamodule=TinyDataModule())
    assert probe.calls and all(call == (torch.bfloat16, False, True) for call in probe.calls)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
def test_autocast_keeps_the_losses_within_its_rounding_of_float32(dtype, rtol):
    images, labels = _batch()
    module = make_module("at_kd")
    want = _terms(module, images, labels)
    with torch.autocast("cpu", dtype=dtype):
        got = _terms(module, images, labels)
    for name in want:  # bf16 keeps 8 significant bits (0.4 % per value), fp16 11; the losses upcast
        assert got[name].dtype == torch.float32, name
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=1e-4)


@pytest.fixture
def tapped():
    torch.manual_seed(0)
    spec = BackboneSpec("resnet10", 5, layers=["layer1", "layer2:pre", "layer3", "layer4"])
    net = build_backbone(spec)
    return net, FeatureTap(net, spec.tap_layers, spec.tap_head)


def _assert_same_features(a, b, rtol: float) -> None:
    for x, y in zip([a.logits, a.pooled, *a.maps], [b.logits, b.pooled, *b.maps]):
        torch.testing.assert_close(x, y, rtol=rtol, atol=rtol)


def test_a_network_compiled_in_place_fills_its_taps_as_in_eager_mode(tapped):
    net, tap = tapped
    x = torch.randn(2, 3, 48, 48)
    eager = tap(x)
    explained = torch._dynamo.explain(net)(x)
    assert explained.graph_break_count == 0  # the hooks are traced into one graph
    torch._dynamo.reset()
    assert compile_network(net, "aot_eager")
    assert compile_network(net, "aot_eager")  # idempotent: compiled once
    compiled = tap(x)
    _assert_same_features(compiled, eager, rtol=1e-5)
    assert compiled.names == ("layer1", "layer2:pre", "layer3", "layer4")


def test_compiling_without_a_cpp_compiler_falls_back_to_eager_with_a_warning(tapped, monkeypatch):
    net, _ = tapped
    monkeypatch.setattr("kdscene.models.compiled.shutil.which", lambda name: None)
    with pytest.warns(UserWarning, match="needs a C\\+\\+ compiler"):
        assert not compile_network(net, "inductor", "cpu")
    assert getattr(net, "_compiled_call_impl", None) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # CUDA code needs no C++ compiler: no warning
        assert compile_network(net, "aot_eager", "cuda")


def test_a_compiled_distillation_module_trains_with_its_taps(tmp_path):
    module = make_module("at_kd", compile="aot_eager")
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=TinyDataModule())
    assert module.student._compiled_call_impl is not None and module.teacher._compiled_call_impl is not None
    for name in ("train/loss_at", "train/loss_kd", "val/acc_top1"):
        assert torch.isfinite(trainer.callback_metrics[name]), name


@pytest.mark.slow
def test_inductor_compiled_taps_equal_the_eager_ones(tapped):
    net, tap = tapped
    x = torch.randn(2, 3, 48, 48)
    eager = tap(x)
    assert compile_network(net, "inductor", "cpu")
    _assert_same_features(tap(x), eager, rtol=1e-4)  # fused kernels: float32 rounding only


@pytest.mark.parametrize(
    ("trainer", "precision", "benchmark"),
    [
        ("cpu", "32-true", False),
        ("gpu", "bf16-mixed", True),
        ("ddp", "bf16-mixed", True),
        ("ddp_sim", "32-true", False),
    ],
)
def test_each_trainer_config_sets_its_devices_defaults(trainer, precision, benchmark, tmp_path):
    cfg = compose_config("train", [f"trainer={trainer}"], tmp_path)
    assert cfg.trainer.precision == precision
    assert bool(cfg.trainer.get("benchmark")) is benchmark
    assert cfg.channels_last is True and cfg.compile is False
