"""Strict checkpoint loading: every accepted container/prefix, and loud failures."""

import pytest
import torch

from kdscene.models import BackboneSpec, build_backbone, load_checkpoint


def _pair():
    src = build_backbone(BackboneSpec("cifar_resnet8", 4))
    dst = build_backbone(BackboneSpec("cifar_resnet8", 4))
    return src, dst


def _wrap(state, kind):
    if kind == "plain":
        return state
    if kind == "module":
        return {f"module.{k}": v for k, v in state.items()}
    if kind == "lightning":
        keys = {f"student.{k}": v for k, v in state.items()}
        keys["distill.at.proj.weight"] = torch.zeros(2)
        keys["teacher.fc.weight"] = torch.zeros(3)
        return {"state_dict": keys, "hyper_parameters": {}}
    if kind == "model":
        return {"model": state, "epoch": 3}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["plain", "module", "lightning", "model"])
def test_load_checkpoint_accepts_common_formats(tmp_path, kind):
    src, dst = _pair()
    path = tmp_path / "w.pth"
    torch.save(_wrap(src.state_dict(), kind), path)
    load_checkpoint(dst, path)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)


def test_build_backbone_loads_checkpoint_from_spec(tmp_path):
    src, _ = _pair()
    torch.save(src.state_dict(), tmp_path / "w.pth")
    model = build_backbone(BackboneSpec("cifar_resnet8", 4, checkpoint=str(tmp_path / "w.pth")))
    torch.testing.assert_close(model.fc.weight, src.fc.weight)


def test_mismatched_checkpoint_lists_keys_and_shapes(tmp_path):
    src = build_backbone(BackboneSpec("cifar_resnet8", 10))
    torch.save(src.state_dict(), tmp_path / "w.pth")
    dst = build_backbone(BackboneSpec("cifar_resnet8", 4))
    with pytest.raises(
        ValueError, match=r"shape mismatches \(2\): fc.bias: checkpoint \(10,\) vs model \(4,\)"
    ):
        load_checkpoint(dst, tmp_path / "w.pth")
    other = build_backbone(BackboneSpec("cifar_resnet14", 4))
    with pytest.raises(ValueError, match="missing keys"):
        load_checkpoint(other, tmp_path / "w.pth")


def test_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(build_backbone(BackboneSpec("cifar_resnet8", 4)), tmp_path / "nope.pth")


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(KeyError, match="known backbones: .*resnet50"):
        build_backbone(BackboneSpec("resnet51", 4))
