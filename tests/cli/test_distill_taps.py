"""Distill configs choose the tapped layers (teacher_layers / student_layers) unless a backbone sets them."""

from omegaconf import open_dict

from kdscene.cli.config import compose_config
from kdscene.cli.fit import build_module
from kdscene.cli.recipe import parse_recipe, stage_config

PRE = ("layer1:pre", "layer2:pre", "layer3:pre", "layer4:pre")


def _module(overrides, tmp_path):
    cfg = compose_config("train", ["teacher.name=resnet10", "student.name=resnet10", *overrides], tmp_path)
    with open_dict(cfg):
        cfg.data.image_size = 32
    recipe = parse_recipe(cfg.distill)
    return build_module(cfg, recipe, recipe.stages[0], num_classes=3)


def test_review_config_taps_pre_activations_of_both_networks(tmp_path):
    module = _module(["distill=review"], tmp_path)
    assert module.teacher_tap.layers == PRE and module.student_tap.layers == PRE
    assert module.hparams.teacher.layers == list(PRE)  # recorded in the checkpoint's hyper-parameters


def test_explicit_backbone_layers_win_over_the_distill_config(tmp_path):
    module = _module(["distill=review_kd", "teacher.layers=[layer1,layer2,layer3,layer4]"], tmp_path)
    assert module.teacher_tap.layers == ("layer1", "layer2", "layer3", "layer4")
    assert module.student_tap.layers == PRE


def test_configs_without_tap_keys_keep_the_presets(tmp_path):
    module = _module(["distill=fam"], tmp_path)
    assert module.teacher_tap.layers == ("layer1", "layer2", "layer3", "layer4")


def test_every_stage_of_a_staged_config_keeps_the_distill_taps(tmp_path):
    cfg = compose_config("train", ["distill=review"], tmp_path)
    with open_dict(cfg):
        cfg.distill.stages = {"only": {"terms": cfg.distill.terms}}
        del cfg.distill["terms"]
        del cfg.distill["callbacks"]
    recipe = parse_recipe(cfg.distill)
    out = stage_config(cfg, recipe, recipe.stages[0], last=True)
    assert tuple(out.distill.teacher_layers) == PRE and tuple(out.distill.student_layers) == PRE
