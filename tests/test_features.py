"""FeatureTap: hooks by module path, clear errors, in-place safety, the contract of every preset."""

import pytest
import torch
import torchvision

from kdscene.features import FeatureTap, probe
from kdscene.models import PRESETS, BackboneSpec, build_backbone


def _resnet18():
    return torchvision.models.resnet18(num_classes=5).eval()


def test_unknown_layer_error_lists_valid_names():
    with pytest.raises(KeyError) as err:
        FeatureTap(_resnet18(), ["layer1", "layer9"])
    message = str(err.value)
    assert "layer9" in message and "layer4.1.conv2" in message and "valid names" in message


def test_stage_outputs_equal_manual_forward_with_inplace_relus():
    model = _resnet18()
    tap = FeatureTap(model, ["layer1", "layer2", "layer3", "layer4"], head="fc")
    x = torch.randn(2, 3, 64, 64)
    feats = tap(x)
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        expected = []
        for name in ["layer1", "layer2", "layer3", "layer4"]:
            h = getattr(model, name)(h)
            expected.append(h.clone())
        pooled = torch.flatten(model.avgpool(h), 1)
    for got, want in zip(feats.maps, expected):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(feats.pooled, pooled)
    torch.testing.assert_close(feats.logits, model.fc(pooled))
    assert feats.names == ("layer1", "layer2", "layer3", "layer4")


def test_inner_layer_overwritten_in_place_raises_unless_cloned():
    model = _resnet18()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(RuntimeError, match="modified in place"):
        FeatureTap(model, ["layer1.0.bn2"])(x)
    feats = FeatureTap(model, ["layer1.0.bn2"], clone=True)(x)
    with torch.no_grad():
        block = model.layer1[0]
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        want = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))
    torch.testing.assert_close(feats.maps[0], want)


def test_remove_detaches_hooks():
    model = _resnet18()
    tap = FeatureTap(model, ["layer1"], head="fc")
    tap.remove()
    assert not model.layer1._forward_hooks and not model.fc._forward_pre_hooks


def test_probe_reports_channels_stride_size_and_restores_mode():
    model = _resnet18().train()
    infos = probe(FeatureTap(model, ["layer1", "layer4"]), 64)
    assert [(i.channels, i.stride, i.size) for i in infos] == [(64, 4, (16, 16)), (512, 32, (2, 2))]
    assert model.training


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_honours_the_feature_contract(name):
    spec = BackboneSpec(name, num_classes=7)
    model = build_backbone(spec)
    tap = FeatureTap(model, spec.tap_layers, spec.tap_head)
    infos = probe(tap, 32)
    strides = [i.stride for i in infos]
    assert strides == sorted(strides) and len(set(strides)) == len(strides)
    feats = tap(torch.randn(2, 3, 32, 32))
    assert feats.logits.shape == (2, 7)
    assert feats.pooled is not None and feats.pooled.shape[0] == 2
    assert feats.pooled.shape[1] == infos[-1].channels  # pooled vector = pooled last tap for these nets
    for info, fmap in zip(infos, feats.maps):
        assert fmap.shape[1:] == (info.channels, *info.size)
