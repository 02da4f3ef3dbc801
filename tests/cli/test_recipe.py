"""The distill node is parsed once into a typed Recipe; unknown keys name the valid ones."""

import pytest
from omegaconf import OmegaConf

from kdscene.cli.recipe import RESOLVER, RecipeError, parse_recipe, stage_outputs

CE = {"_target_": "kdscene.losses.CrossEntropyLoss", "_partial_": True}


def test_a_terms_recipe_is_one_unnamed_stage_with_its_taps():
    recipe = parse_recipe(OmegaConf.create({"terms": {"ce": CE}, "teacher_layers": ["layer1:pre"]}))
    (stage,) = recipe.stages
    assert stage.name == "" and list(stage.terms) == ["ce"] and stage.train_student
    assert recipe.teacher_layers == ("layer1:pre",) and recipe.student_layers is None
    assert not recipe.multi_stage


def test_stages_keep_their_order_and_settings():
    node = {"stages": {"b": {"terms": {"ce": CE}, "train_student": False}, "a": {"terms": {"ce": CE}}}}
    recipe = parse_recipe(OmegaConf.create(node))
    assert [s.name for s in recipe.stages] == ["b", "a"] and recipe.multi_stage
    assert recipe.stages[0].train_student is False and recipe.stages[1].checkpoint is None


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            {"terms": {"ce": CE}, "term": {}},
            r"distill has unknown keys \['term'\]; the valid keys are \['terms'",
        ),
        ({"terms": {"ce": CE}, "stages": {"a": {"terms": {}}}}, "exactly one of 'terms'"),
        ({}, "exactly one of 'terms'"),
        ({"stages": {"a": {"terms": {}}}}, "distill.stages.a has no terms"),
        ({"stages": {"a": {"max_epochs": 1}}}, "distill.stages.a has no terms"),
        ({"stages": {"a": {"terms": {"ce": CE}}}, "callbacks": {"x": {}}}, "give each stage its callbacks"),
    ],
)
def test_bad_recipes_are_refused_with_the_valid_keys(node, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(OmegaConf.create(node))


def test_stage_references_resolve_only_while_the_stages_run():
    node = OmegaConf.create({"dictionary": "${kdscene.stage:first}"})
    outputs = {}
    with stage_outputs(outputs):
        outputs["first"] = "/runs/first/last.ckpt"
        assert node.dictionary == "/runs/first/last.ckpt"
        with pytest.raises(Exception, match="stage 'second' has not run yet; finished stages: \\['first'\\]"):
            OmegaConf.to_container(OmegaConf.create({"x": "${kdscene.stage:second}"}), resolve=True)
    assert not OmegaConf.has_resolver(RESOLVER)  # no state left behind between jobs
