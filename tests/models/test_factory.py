"""BackboneSpec: presets as before, any torchvision/timm name, the user's own module, and clear refusals."""

import pickle
import sys
from functools import partial

import pytest
import torch
import torchvision
from torchvision.models.resnet import BasicBlock, ResNet

from kdscene.models import BackboneSpec, build_backbone
from kdscene.models.cifar_resnet import CifarResNet
from tests.models.nets import ConvHeadNet, FixedNet, TinyNet, TupleNet

# today's constructors of the presets (kdscene.models.presets before any-network support)
TODAY = {
    "resnet18": lambda n: torchvision.models.resnet18(weights=None, num_classes=n),
    "resnet10": lambda n: ResNet(BasicBlock, [1, 1, 1, 1], num_classes=n),
    "mobilenet_v2": lambda n: torchvision.models.mobilenet_v2(weights=None, num_classes=n),
    "cifar_resnet20": lambda n: CifarResNet(20, (16, 16, 32, 64), n),
    "cifar_resnet8x4": lambda n: CifarResNet(8, (32, 64, 128, 256), n),
}


@pytest.mark.parametrize("name", sorted(TODAY))
def test_presets_build_todays_networks_with_the_same_seeded_weights(name):
    torch.manual_seed(3)
    got = build_backbone(BackboneSpec(name, 7)).state_dict()
    torch.manual_seed(3)
    want = TODAY[name](7).state_dict()
    assert list(got) == list(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def test_preset_taps_and_head_need_no_build():
    spec = BackboneSpec("mobilenet_v2", 3)
    assert spec.tap_layers == ("features.3", "features.6", "features.13", "features.18")
    assert spec.tap_head == "classifier" and spec.resolved is None


def test_any_torchvision_classification_model_builds_by_name():
    spec = BackboneSpec("shufflenet_v2_x0_5", 4)
    model = build_backbone(spec)
    assert isinstance(model, torchvision.models.ShuffleNetV2) and model.fc.out_features == 4
    assert spec.tap_head == "fc" and spec.resolved.kind == "torchvision"


def test_googlenet_is_built_without_auxiliary_logits():
    model = build_backbone(BackboneSpec("googlenet", 4, layers=["inception5b"])).train()
    assert isinstance(model(torch.randn(2, 3, 64, 64)), torch.Tensor)


def test_taps_of_an_unbuilt_non_preset_are_refused():
    with pytest.raises(RuntimeError, match="call build_backbone first"):
        BackboneSpec("convnext_tiny", 3).tap_layers  # noqa: B018


def test_unknown_name_lists_presets_and_how_to_list_the_rest():
    with pytest.raises(KeyError) as err:
        build_backbone(BackboneSpec("resnet51", 4))
    message = str(err.value)
    assert "known backbones: the kdscene presets cifar_resnet110" in message and "resnet50" in message
    assert "torchvision.models.list_models(module=torchvision.models)" in message
    assert "'timm/<name>' (timm.list_models()" in message


def test_timm_name_without_timm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(ImportError, match=r"'timm/resnet18' needs timm.*pip install kdscene\[timm\]"):
        build_backbone(BackboneSpec("timm/resnet18", 4))


def test_exactly_one_of_name_and_model():
    with pytest.raises(ValueError, match=r"exactly one of name .* and model .*set name=null"):
        BackboneSpec("resnet18", 4, model=TinyNet)
    with pytest.raises(ValueError, match="exactly one of name"):
        BackboneSpec(num_classes=4)


@pytest.mark.parametrize(
    ("sources", "listed"),
    [
        ({"checkpoint": "a.pth", "init": "b.pth"}, "checkpoint, init"),
        ({"init": "b.pth", "weights": "DEFAULT"}, "init, weights"),
        ({"checkpoint": "a.pth", "init": "b.pth", "weights": "DEFAULT"}, "checkpoint, init, weights"),
    ],
)
def test_at_most_one_weight_source(sources, listed):
    with pytest.raises(ValueError, match=f"at most one of checkpoint .* got {listed}$"):
        BackboneSpec("resnet18", 4, **sources)


def test_weight_sources_are_checked_again_at_build():
    spec = BackboneSpec("resnet18", 4, init="b.pth")
    spec.checkpoint = "a.pth"  # as a caller may set it after instantiation
    with pytest.raises(ValueError, match="got checkpoint, init"):
        build_backbone(spec)


def test_own_module_with_num_classes_argument_is_built_for_the_data():
    spec = BackboneSpec(model=partial(TinyNet, width=2), num_classes=3)
    model = build_backbone(spec)
    assert isinstance(model, TinyNet) and model.fc.out_features == 3 and model.s1[0].out_channels == 4
    assert spec.tap_head == "fc" and spec.resolved.kind == "model"


def test_own_module_without_num_classes_gets_its_last_linear_rebuilt(caplog):
    spec = BackboneSpec(model=FixedNet, num_classes=3)
    with caplog.at_level("INFO", logger="kdscene.models"):
        model = build_backbone(spec)
    assert model.head[2].out_features == 3 and model.head[2].in_features == 16
    assert model.head[0].out_features == 16  # only the last Linear changes
    assert spec.tap_head == "head.2"
    logged = "FixedNet: rebuilt the classifier head.2 for 3 classes: Linear(16 -> 10) -> Linear(16 -> 3)"
    assert logged in caplog.text


def test_own_module_with_a_named_container_head_rebuilds_its_last_linear():
    spec = BackboneSpec(model=FixedNet, num_classes=4, head="head")
    model = build_backbone(spec)
    assert model.head[2].out_features == 4 and spec.tap_head == "head"


def test_own_module_whose_classifier_already_fits_is_not_rebuilt(caplog):
    with caplog.at_level("INFO", logger="kdscene.models"):
        model = build_backbone(BackboneSpec(model=FixedNet, num_classes=10))
    assert model.head[2].out_features == 10 and "rebuilt" not in caplog.text


def test_own_module_without_linear_or_num_classes_is_refused():
    with pytest.raises(ValueError, match=r"no nn.Linear classifier.*num_classes constructor argument.*head="):
        build_backbone(BackboneSpec(model=lambda: ConvHeadNet(num_classes=10), num_classes=3))


def test_own_module_with_conv_classifier_needs_head():
    with pytest.raises(ValueError, match=r"no nn.Linear with out_features=3.*head=<module path>"):
        build_backbone(BackboneSpec(model=ConvHeadNet, num_classes=3))


def test_a_factory_that_returns_no_module_or_no_logits_is_refused():
    with pytest.raises(TypeError, match="returned dict, not an nn.Module"):
        build_backbone(BackboneSpec(model=dict, num_classes=3))
    with pytest.raises(ValueError, match=r"TupleNet returns tuple for one image; expected .* \(1, 3\)"):
        build_backbone(BackboneSpec(model=TupleNet, num_classes=3))


def test_unknown_head_lists_valid_names():
    with pytest.raises(KeyError, match="has no module 'fc9' \\(head\\); valid names are: stem"):
        build_backbone(BackboneSpec(model=TinyNet, num_classes=3, head="fc9"))


def test_built_spec_pickles_with_its_resolved_taps_and_holds_no_tensor():
    spec = BackboneSpec(model=partial(TinyNet, width=2), num_classes=3)
    build_backbone(spec)
    clone = pickle.loads(pickle.dumps(spec))
    assert clone.tap_layers == ("s1", "s2", "s3", "s4") and clone.tap_head == "fc"
    assert clone.resolved == spec.resolved
    assert not any(isinstance(v, torch.Tensor) for v in vars(clone).values())


def test_resolution_does_not_change_equality():
    built = BackboneSpec("resnet10", 3)
    build_backbone(built)
    assert built.resolved is not None and built == BackboneSpec("resnet10", 3)


def test_distillation_module_takes_an_auto_tapped_pair_of_networks():
    from kdscene.losses import ATLoss, KDLoss
    from kdscene.module import DistillationModule

    module = DistillationModule(
        student=BackboneSpec("mobilenet_v3_small", 3),
        teacher=BackboneSpec(model=partial(TinyNet, width=2), num_classes=3),
        distill={"at": ATLoss(weight=1.0), "kd": KDLoss(temperature=4.0)},
        optimizer=partial(torch.optim.SGD, lr=0.1),
        image_size=64,
    )
    student, teacher = module.features(torch.randn(2, 3, 64, 64))
    assert student.names == ("features.1", "features.3", "features.8", "features.12")
    assert teacher.names == ("s1", "s2", "s3", "s4")
    loss = sum(module.loss_terms(student, teacher, torch.tensor([0, 2])).values())
    loss.backward()
    assert module.student.features[1].block[0][0].weight.grad is not None
