"""conf/teacher and conf/student: one default.yaml each, every BackboneSpec key, any network by override."""

import dataclasses
from functools import partial
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kdscene.cli.config import CONFIG_DIR, compose_config
from kdscene.models import BackboneSpec, build_backbone
from tests.models.nets import TinyNet

SPEC_KEYS = {f.name for f in dataclasses.fields(BackboneSpec) if f.init}


@pytest.mark.parametrize(("group", "name"), [("teacher", "resnet18"), ("student", "resnet10")])
def test_each_group_is_one_default_file_with_every_spec_key(group, name):
    files = sorted(p.name for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
    assert files == ["default.yaml"]
    cfg = OmegaConf.load(Path(CONFIG_DIR) / group / "default.yaml")
    assert set(cfg) == SPEC_KEYS | {"_target_"}
    assert cfg.name == name and all(cfg[k] is None for k in SPEC_KEYS - {"name"})


def test_overrides_pick_any_network_and_its_weights(tmp_path):
    overrides = [
        "teacher.name=convnext_tiny",
        "teacher.weights=DEFAULT",
        "student.name=timm/resnet18",
        "student.init=/ckpt/r18.pth",
    ]
    cfg = compose_config("train", overrides, tmp_path)
    teacher, student = instantiate(cfg.teacher, _convert_="all"), instantiate(cfg.student, _convert_="all")
    assert (teacher.name, teacher.weights, teacher.init) == ("convnext_tiny", "DEFAULT", None)
    assert (student.name, student.init, student.weights) == ("timm/resnet18", "/ckpt/r18.pth", None)


def test_own_module_by_target_and_partial(tmp_path):
    target = "{_target_: tests.models.nets.TinyNet, _partial_: true, width: 2}"
    cfg = compose_config("train", [f"teacher.model={target}", "teacher.name=null"], tmp_path)
    spec = instantiate(cfg.teacher, _convert_="all", num_classes=3)
    assert isinstance(spec.model, partial) and spec.model.func is TinyNet
    assert spec.model.keywords == {"width": 2}
    model = build_backbone(spec)
    assert model.fc.out_features == 3 and spec.tap_layers == ("s1", "s2", "s3", "s4")


def test_own_module_without_clearing_name_is_refused(tmp_path):
    target = "{_target_: tests.models.nets.TinyNet, _partial_: true}"
    cfg = compose_config("train", [f"teacher.model={target}"], tmp_path)
    with pytest.raises(Exception, match="exactly one of name"):
        instantiate(cfg.teacher, _convert_="all")
