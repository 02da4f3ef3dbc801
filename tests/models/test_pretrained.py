"""init= and weights=: another task's weights with the classifier re-initialised, offline, loud on misfit."""

import os
import sys
import types
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models.resnet import BasicBlock, ResNet

from kdscene.models import BackboneSpec, build_backbone, init_from_file
from tests.models.nets import TinyNet


def _imagenet_resnet10() -> dict[str, torch.Tensor]:
    """A torchvision-format ImageNet state dict (1000 classes) of kdscene's resnet10 architecture."""
    torch.manual_seed(11)
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=1000).state_dict()


def _assert_backbone_equal(model: torch.nn.Module, state: dict[str, torch.Tensor], head: str) -> None:
    own = model.state_dict()
    for key, value in state.items():
        if not key.startswith(head + "."):
            torch.testing.assert_close(own[key], value, rtol=0, atol=0)


def test_init_from_imagenet_state_dict_reinitialises_only_the_classifier(tmp_path, caplog):
    state = _imagenet_resnet10()
    torch.save(state, tmp_path / "r10_imagenet.pth")
    path = str(tmp_path / "r10_imagenet.pth")
    torch.manual_seed(5)
    with caplog.at_level("INFO", logger="kdscene.models"):
        spec = BackboneSpec("resnet10", 4, init=path)
        model = build_backbone(spec)
    torch.manual_seed(5)
    fresh = build_backbone(BackboneSpec("resnet10", 4))  # same seed: the classifier a new network gets
    _assert_backbone_equal(model, state, "fc")
    assert model.fc.weight.shape == (4, 512)
    torch.testing.assert_close(model.fc.weight, fresh.fc.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.fc.bias, fresh.fc.bias, rtol=0, atol=0)
    loaded = len(state) - 2  # everything but fc.weight and fc.bias
    message = (
        f"init resnet10 from {path}: loaded {loaded} tensors; re-initialised the classifier fc "
        "(fc.weight (1000, 512) -> (4, 512), fc.bias (1000,) -> (4,))"
    )
    assert spec.resolved.init == message and message in caplog.text


def test_init_report_lists_loaded_and_reinitialised_keys(tmp_path):
    state = _imagenet_resnet10()
    torch.save(state, tmp_path / "w.pth")
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=4)
    report = init_from_file(model, tmp_path / "w.pth", "fc", "resnet10")
    assert set(report.loaded) == set(state) - {"fc.weight", "fc.bias"}
    assert report.reinitialised == ("fc.weight (1000, 512) -> (4, 512)", "fc.bias (1000,) -> (4,)")
    assert report.ignored == ()


def _csail(state: dict[str, torch.Tensor]) -> dict:
    """A CSAIL Places365 file: ``module.`` keys under ``state_dict``, saved before BN counters existed."""
    keys = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return {"epoch": 90, "arch": "resnet18", "state_dict": keys, "best_prec1": 54.7}


def test_init_from_csail_places365_file(tmp_path):
    torch.manual_seed(12)
    state = torchvision.models.resnet18(num_classes=365).state_dict()
    torch.save(_csail(state), tmp_path / "resnet18_places365.pth.tar")
    spec = BackboneSpec("resnet18", 6, init=str(tmp_path / "resnet18_places365.pth.tar"))
    model = build_backbone(spec)
    _assert_backbone_equal(model, {k: v for k, v in state.items() if "num_batches" not in k}, "fc")
    assert model.fc.weight.shape == (6, 512)
    expected = sum(1 for k in state if not k.endswith("num_batches_tracked")) - 2
    assert f"loaded {expected} tensors" in spec.resolved.init
    assert "fc.weight (365, 512) -> (6, 512), fc.bias (365,) -> (6,)" in spec.resolved.init


def test_init_of_a_container_head_reinitialises_its_mismatching_keys(tmp_path):
    torch.manual_seed(13)
    state = torchvision.models.mobilenet_v2(num_classes=1000).state_dict()
    torch.save({"model": state}, tmp_path / "mnv2.pth")
    spec = BackboneSpec("mobilenet_v2", 5, init=str(tmp_path / "mnv2.pth"))
    model = build_backbone(spec)
    _assert_backbone_equal(model, state, "classifier")
    assert model.classifier[1].weight.shape == (5, 1280)
    assert "re-initialised the classifier classifier (classifier.1.weight (1000, 1280) -> (5, 1280)" in (
        spec.resolved.init
    )


def test_init_from_a_kdscene_run_of_another_data_set(tmp_path):
    src = build_backbone(BackboneSpec("cifar_resnet8", 10))
    ckpt = {"state_dict": {f"student.{k}": v for k, v in src.state_dict().items()}, "hyper_parameters": {}}
    ckpt["state_dict"]["distill.kd.dummy"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "last.ckpt")
    model = build_backbone(BackboneSpec("cifar_resnet8", 3, init=str(tmp_path / "last.ckpt")))
    _assert_backbone_equal(model, src.state_dict(), "fc")
    assert model.fc.out_features == 3


def test_init_of_an_own_module_uses_its_rebuilt_head(tmp_path):
    torch.manual_seed(14)
    src = TinyNet(num_classes=10)
    torch.save(src.state_dict(), tmp_path / "tiny.pth")
    spec = BackboneSpec(model=TinyNet, num_classes=2, init=str(tmp_path / "tiny.pth"))
    model = build_backbone(spec)
    _assert_backbone_equal(model, src.state_dict(), "fc")
    assert "init TinyNet from" in spec.resolved.init and "fc.weight (10, 32) -> (2, 32)" in spec.resolved.init


def test_init_refuses_a_missing_backbone_key_and_lists_it(tmp_path):
    state = _imagenet_resnet10()
    del state["layer2.0.conv1.weight"]
    torch.save(state, tmp_path / "w.pth")
    listed = r"outside its classifier 'fc':\n  missing keys \(1\): layer2.0.conv1.weight$"
    with pytest.raises(ValueError, match=listed):
        build_backbone(BackboneSpec("resnet10", 4, init=str(tmp_path / "w.pth")))


def test_init_refuses_a_backbone_key_of_another_shape_and_lists_it(tmp_path):
    state = _imagenet_resnet10()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(ValueError) as err:
        build_backbone(BackboneSpec("resnet10", 4, init=str(tmp_path / "w.pth")))
    message = str(err.value)
    assert "unexpected keys (1): extra.weight" in message
    shapes = "shape mismatches (1): layer1.0.conv1.weight: checkpoint (64, 64, 1, 1) vs model (64, 64, 3, 3)"
    assert shapes in message
    assert "fc.weight" not in message


def test_init_file_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="init file .*nope.pth' does not exist"):
        build_backbone(BackboneSpec("resnet10", 4, init=str(tmp_path / "nope.pth")))


# -- torchvision weights through a fake torch hub cache --------------------------------------------------


def _fake_hub_file(tmp_path: Path, monkeypatch, weights, state: dict[str, torch.Tensor]) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / os.path.basename(weights.url))

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)


def test_torchvision_weights_load_like_init_from_the_hub_cache(tmp_path, monkeypatch):
    torch.manual_seed(15)
    state = torchvision.models.shufflenet_v2_x0_5(num_classes=1000).state_dict()
    _fake_hub_file(tmp_path, monkeypatch, torchvision.models.ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1, state)
    spec = BackboneSpec("shufflenet_v2_x0_5", 4, weights="DEFAULT")
    model = build_backbone(spec)
    _assert_backbone_equal(model, state, "fc")
    assert model.fc.weight.shape == (4, 1024)
    source = "ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1"
    assert spec.resolved.init.startswith(f"init shufflenet_v2_x0_5 from {source}: loaded ")
    assert "fc.weight (1000, 1024) -> (4, 1024)" in spec.resolved.init


def test_torchvision_weights_of_a_preset(tmp_path, monkeypatch):
    torch.manual_seed(16)
    state = torchvision.models.mobilenet_v2(num_classes=1000).state_dict()
    _fake_hub_file(tmp_path, monkeypatch, torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1, state)
    model = build_backbone(BackboneSpec("mobilenet_v2", 3, weights="IMAGENET1K_V1"))
    _assert_backbone_equal(model, state, "classifier")
    assert model.classifier[1].out_features == 3


def test_unknown_torchvision_weights_list_the_valid_ones():
    listed = "resnet18 has no weights 'IMAGENET1K_V9'; torchvision has: IMAGENET1K_V1, DEFAULT$"
    with pytest.raises(ValueError, match=listed):
        build_backbone(BackboneSpec("resnet18", 4, weights="IMAGENET1K_V9"))


def test_weights_of_a_name_torchvision_does_not_know_point_to_init():
    with pytest.raises(ValueError, match="'resnet10' is not a torchvision model.*init=<path>"):
        build_backbone(BackboneSpec("resnet10", 4, weights="IMAGENET1K_V1"))


def test_weights_of_an_own_module_point_to_init():
    with pytest.raises(ValueError, match="names torchvision or timm weights.*TinyNet from a file with init="):
        BackboneSpec(model=TinyNet, num_classes=4, weights="IMAGENET1K_V1")


# -- timm ------------------------------------------------------------------------------------------------


def _fake_timm(monkeypatch) -> list[dict]:
    timm = pytest.importorskip("timm")
    calls: list[dict] = []
    real = timm.create_model

    def create_model(name: str, pretrained: bool = False, **kwargs):
        calls.append({"name": name, "pretrained": pretrained, **kwargs})
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    return calls


def test_timm_weights_pretrained_asks_timm_for_pretrained_weights(monkeypatch):
    calls = _fake_timm(monkeypatch)
    model = build_backbone(BackboneSpec("timm/resnet18", 4, weights="pretrained"))
    assert calls == [{"name": "resnet18", "pretrained": True, "num_classes": 4}]
    assert model.fc.out_features == 4
    build_backbone(BackboneSpec("timm/resnet18", 4))
    assert calls[1]["pretrained"] is False


def test_timm_weights_other_than_pretrained_are_refused(monkeypatch):
    _fake_timm(monkeypatch)
    with pytest.raises(ValueError, match="timm models take weights='pretrained'.*not 'IMAGENET1K_V1'"):
        build_backbone(BackboneSpec("timm/resnet18", 4, weights="IMAGENET1K_V1"))
