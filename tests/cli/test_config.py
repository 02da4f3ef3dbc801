"""Config helpers: keys that moved give a clear error naming the new key, in-process and on the CLI."""

import subprocess
import sys

import pytest

from kdscene.cli.config import MovedKeyError, check_overrides, compose_config, moved_key_messages


def test_a_removed_key_is_named_with_what_replaces_it():
    (message,) = moved_key_messages(["distill=kd", "eval_teacher=false", "-m"])
    assert message.startswith("'eval_teacher' has moved: use (removed: the teacher's accuracy is logged")


def test_overrides_with_prefixes_are_checked_and_others_pass():
    with pytest.raises(MovedKeyError, match="eval_teacher"):
        check_overrides(["+eval_teacher=true"])
    check_overrides(["seed=1", "distill=kd", "--multirun"])


def test_compose_refuses_a_moved_key_before_hydra_reports_a_struct_error(tmp_path):
    with pytest.raises(MovedKeyError, match="'eval_teacher' has moved"):
        compose_config("train", ["eval_teacher=false"], tmp_path)


def test_the_console_entry_exits_2_with_the_message_and_without_importing_torch(tmp_path):
    code = (
        "import sys; sys.argv = ['kdscene-train', 'eval_teacher=false']\n"
        "from kdscene.cli.train import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n"
        "    assert 'torch' not in sys.modules, 'torch was imported'\n    raise\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "'eval_teacher' has moved" in result.stderr


def test_an_old_data_key_names_its_new_place_under_the_reader(tmp_path):
    with pytest.raises(MovedKeyError, match="'data.partition' has moved: use data.reader.partition"):
        compose_config("train", ["data=sun397", "data.partition=3"], tmp_path)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("distill.terms.dct.scales", "distill.terms.dct.select"),
        ("distill.terms.semckd.student_scales", "distill.terms.semckd.select"),
        ("distill.terms.semckd.teacher_scales", "distill.terms.semckd.teacher_select"),
        ("distill.terms.hint.student_index", "distill.terms.hint.select"),
        ("distill.stages.hint.terms.hint.teacher_index", "distill.stages.hint.terms.hint.teacher_select"),
    ],
)
def test_renamed_loss_options_name_their_new_key(old, new):
    (message,) = moved_key_messages([f"{old}=[2,3]"])
    assert message == f"{old!r} has moved: use {new}"


def test_every_new_loss_option_exists_and_no_distill_config_uses_an_old_one(tmp_path):
    import inspect

    from kdscene.cli.config import CONFIG_DIR
    from kdscene.losses import DCTAttentionLoss, FitNetLoss, SemCKDLoss, SPLoss, VIDLoss

    for loss in (DCTAttentionLoss, SPLoss, VIDLoss, SemCKDLoss, FitNetLoss):
        params = inspect.signature(loss).parameters
        assert "select" in params and not {"scales", "student_scales", "student_index"} & set(params)
    for path in (
        tmp_path.parent / "x",
        *sorted((__import__("pathlib").Path(CONFIG_DIR) / "distill").glob("*.yaml")),
    ):
        if path.is_file():
            assert not moved_key_messages([f"{k}=1" for k in _keys(path.read_text())]), path


def _keys(text):
    import yaml

    def walk(node, prefix):
        for key, value in (node or {}).items():
            yield f"{prefix}.{key}"
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}.{key}")

    return list(walk(yaml.safe_load(text), "distill"))


def test_a_network_picked_as_a_config_group_option_names_the_name_key():
    (message,) = moved_key_messages(["teacher=resnet50", "student.name=resnet18", "teacher=default"])
    assert message == "teacher=resnet50 picked a config file per network: use teacher.name=resnet50"
