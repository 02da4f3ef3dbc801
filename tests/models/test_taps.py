"""Automatic taps and heads: known answers, the rule's exclusions, the feature contract of any network."""

from functools import partial

import pytest
import torch
import torchvision

from kdscene.features import FeatureTap, probe
from kdscene.models import PRESETS, BackboneSpec, build_backbone, find_head, find_taps, split_parameters
from tests.models.nets import ConvHeadNet, SharedPoolNet, TinyNet, TokenNet


def test_imagenet_resnet_gets_its_four_stages():
    assert find_taps(torchvision.models.resnet18(num_classes=3)) == ("layer1", "layer2", "layer3", "layer4")


def test_bottleneck_resnet_skips_the_stride_4_convolution_that_opens_layer2():
    assert find_taps(torchvision.models.resnet50(num_classes=3)) == ("layer1", "layer2", "layer3", "layer4")


def test_mobilenet_v2_gets_the_presets_taps_not_its_features_trunk():
    assert find_taps(torchvision.models.mobilenet_v2(num_classes=3)) == PRESETS["mobilenet_v2"].layers


def test_densenet_skips_norm5_which_an_inplace_relu_overwrites():
    taps = find_taps(torchvision.models.densenet121(num_classes=3))
    assert taps == tuple(f"features.denseblock{i}" for i in range(1, 5))


def test_a_module_called_several_times_is_never_a_tap():
    # the shared max-pool is the last stride-8 output; by name a tap would see only its last call
    assert find_taps(SharedPoolNet()) == ("stage2",)


def test_own_network_gets_its_stages_at_strides_4_to_32():
    assert find_taps(TinyNet()) == ("s1", "s2", "s3", "s4")


def test_token_network_asks_for_layers():
    with pytest.raises(ValueError, match=r"'blocks.0' gives a \(1, 196, 16\) tensor.*layers=\[\.\.\.\]"):
        find_taps(TokenNet())


def test_find_head_is_the_last_linear_with_num_classes_outputs():
    assert find_head(torchvision.models.mobilenet_v3_small(num_classes=6), 6) == "classifier.3"
    assert find_head(torchvision.models.resnet18(num_classes=6), 6) == "fc"


def test_find_head_without_a_matching_linear_asks_for_head():
    with pytest.raises(ValueError, match=r"no nn.Linear with out_features=5.*head=<module path>"):
        find_head(ConvHeadNet(num_classes=5), 5)
    with pytest.raises(ValueError, match=r"its nn.Linear layers: fc \(512->1000\)"):
        find_head(torchvision.models.resnet18(), 5)


def test_split_parameters_separates_the_head_in_order():
    model = torchvision.models.resnet18(num_classes=4)
    backbone, head = split_parameters(model, "fc")
    assert [id(p) for p in head] == [id(model.fc.weight), id(model.fc.bias)]
    rest = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
    assert [id(p) for p in backbone] == [id(p) for p in rest]
    with pytest.raises(KeyError, match="no module 'fc9'"):
        split_parameters(model, "fc9")


def _assert_contract(spec: BackboneSpec, size: int = 64) -> None:
    """Maps of strictly decreasing size matching the probed TapInfo; head(pooled) gives the logits."""
    model = build_backbone(spec).eval()
    tap = FeatureTap(model, spec.tap_layers, spec.tap_head)
    infos = probe(tap, size)
    with torch.no_grad():
        feats = tap(torch.randn(1, 3, size, size))
        from_pooled = model.get_submodule(spec.tap_head)(feats.pooled)
    assert feats.logits.shape == (1, spec.num_classes)
    assert len(feats.maps) == len(infos) >= 1
    sizes = [fmap.shape[2] for fmap in feats.maps]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    for info, fmap in zip(infos, feats.maps):
        assert fmap.dim() == 4 and fmap.shape[1:] == (info.channels, *info.size)
    assert feats.pooled.dim() == 2
    torch.testing.assert_close(from_pooled, feats.logits)


FAMILIES = ["mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "convnext_tiny", "densenet121"]


@pytest.mark.parametrize("name", FAMILIES)
def test_torchvision_families_honour_the_feature_contract(name):
    spec = BackboneSpec(name, num_classes=5)
    _assert_contract(spec)
    assert spec.resolved.kind == "torchvision" and len(spec.tap_layers) == 4


def test_auto_tapped_resnet18_factory_honours_the_feature_contract():
    spec = BackboneSpec(model=torchvision.models.resnet18, num_classes=5)
    _assert_contract(spec)
    assert spec.tap_layers == ("layer1", "layer2", "layer3", "layer4") and spec.tap_head == "fc"


def test_own_network_honours_the_feature_contract():
    _assert_contract(BackboneSpec(model=partial(TinyNet, width=4), num_classes=3))


def test_timm_model_uses_feature_info_and_get_classifier():
    pytest.importorskip("timm")
    spec = BackboneSpec("timm/resnet18", num_classes=5)
    _assert_contract(spec)
    assert spec.tap_layers == ("layer1", "layer2", "layer3", "layer4") and spec.tap_head == "fc"
    assert spec.resolved.kind == "timm"


def test_timm_vit_asks_for_layers():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"no convolutional feature maps.*layers=\[\.\.\.\]"):
        build_backbone(BackboneSpec("timm/vit_tiny_patch16_224", num_classes=5))


def test_taps_are_logged_once(caplog):
    with caplog.at_level("INFO", logger="kdscene.models"):
        build_backbone(BackboneSpec(model=TinyNet, num_classes=3))
    lines = [r.getMessage() for r in caplog.records if "taps" in r.getMessage()]
    assert lines == ["TinyNet: taps s1, s2, s3, s4 (found automatically), head fc"]


def test_given_layers_and_head_are_kept():
    spec = BackboneSpec("efficientnet_b0", 5, layers=["features.4", "features.6"], head="classifier")
    build_backbone(spec)
    assert spec.tap_layers == ("features.4", "features.6") and spec.tap_head == "classifier"
