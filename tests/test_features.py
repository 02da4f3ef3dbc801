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


# -- pre-activation taps ("<stage>:pre") ----------------------------------------------------------


def _basic_block_preact(block, h):
    """A BasicBlock by hand, out of place: bn2(conv2(relu(bn1(conv1(h))))) + identity."""
    out = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(h)))))
    return out + (block.downsample(h) if block.downsample is not None else h)


def _bottleneck_preact(block, h):
    out = torch.relu(block.bn1(block.conv1(h)))
    out = torch.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    return out + (block.downsample(h) if block.downsample is not None else h)


def _stem(model, x):
    return model.maxpool(model.relu(model.bn1(model.conv1(x))))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_preact_tap_equals_hand_computed_value_before_the_final_relu(arch):
    model = getattr(torchvision.models, arch)(num_classes=5).eval()
    # non-trivial BN statistics, so that pre-activations have both signs everywhere
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.bias.data.uniform_(-0.5, 0.5)
    names = ["layer1:pre", "layer2", "layer2:pre", "layer4:pre"]
    x = torch.randn(2, 3, 64, 64)
    feats = FeatureTap(model, names, head="fc")(x)
    by_hand = _basic_block_preact if arch == "resnet18" else _bottleneck_preact
    with torch.no_grad():
        h, want = _stem(model, x), {}
        for stage in ["layer1", "layer2", "layer3", "layer4"]:
            layer = getattr(model, stage)
            for block in list(layer)[:-1]:
                h = block(h)
            want[f"{stage}:pre"] = by_hand(layer[-1], h)
            h = torch.relu(want[f"{stage}:pre"])
            want[stage] = h
        logits = model.fc(torch.flatten(model.avgpool(h), 1))
    for name, got in zip(names, feats.maps):
        torch.testing.assert_close(got, want[name])
    pre, post = feats.maps[2], feats.maps[1]
    assert (pre < 0).float().mean() > 0.1  # not clobbered by the in-place ReLU
    torch.testing.assert_close(torch.relu(pre), post)
    torch.testing.assert_close(feats.logits, logits)  # the model's own forward is unchanged


def test_preact_tap_on_cifar_resnet_and_on_a_single_block():
    model = build_backbone(BackboneSpec("cifar_resnet20", num_classes=3)).eval()
    x = torch.randn(2, 3, 16, 16)
    feats = FeatureTap(model, ["layer2:pre", "layer2.2:pre", "layer2.0:pre"])(x)
    with torch.no_grad():
        h = model.layer1(model.relu(model.bn1(model.conv1(x))))
        first = _basic_block_preact(model.layer2[0], h)
        h = model.layer2[1](torch.relu(first))
        last = _basic_block_preact(model.layer2[2], h)
    torch.testing.assert_close(feats.maps[0], last)
    torch.testing.assert_close(feats.maps[1], last)
    torch.testing.assert_close(feats.maps[2], first)


def test_preact_tap_passes_gradients_to_the_student():
    model = _resnet18().train()
    x = torch.randn(2, 3, 32, 32)
    feats = FeatureTap(model, ["layer3:pre"])(x)
    feats.maps[0].pow(2).sum().backward()
    got = model.layer3[1].conv2.weight.grad.clone()
    model.zero_grad()
    h = model.layer2(model.layer1(_stem(model, x)))
    _basic_block_preact(model.layer3[1], model.layer3[0](h)).pow(2).sum().backward()
    torch.testing.assert_close(got, model.layer3[1].conv2.weight.grad)


def test_preact_tap_refuses_blocks_without_relu_and_probes_shapes():
    with pytest.raises(ValueError, match="no `relu` sub-module"):
        FeatureTap(build_backbone(BackboneSpec("mobilenet_v2", num_classes=3)), ["features.3:pre"])
    with pytest.raises(KeyError, match="layer9"):
        FeatureTap(_resnet18(), ["layer9:pre"])
    infos = probe(FeatureTap(_resnet18(), ["layer1:pre", "layer4:pre"]), 64)
    assert [(i.name, i.channels, i.size) for i in infos] == [
        ("layer1:pre", 64, (16, 16)),
        ("layer4:pre", 512, (2, 2)),
    ]
