"""Install anywhere: the wheel ships the configs, and its commands work from outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_of_the_source_tree():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(REPO).parts[:-1]) for p in (REPO / "kdscene").rglob("__init__.py")}
    assert listed == found | {"kdscene.conf"}


def test_help_answers_without_importing_torch():
    code = "import sys; from kdscene.cli import train; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _source_copy(dest: Path) -> Path:
    """The repository's files that git would commit (tracked and new, not ignored), copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True
    )
    files = listed.stdout.split() if listed.returncode == 0 else None
    if files is None:  # not a git checkout: copy everything but build products
        shutil.copytree(
            REPO, dest, ignore=shutil.ignore_patterns("build", "*.egg-info", ".git", "logs", "data")
        )
        return dest
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def _clean_env() -> dict[str, str]:
    """This environment without PYTHONPATH (a checkout on it would shadow the installed wheel)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    """A fresh venv holding the built wheel (dependencies borrowed from this environment)."""
    out = tmp_path_factory.mktemp("wheel")
    source = _source_copy(out / "src")  # setuptools builds in-tree: keep the checkout clean
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(out / "dist")]
    subprocess.run(build, check=True, capture_output=True, cwd=out, env=_clean_env())
    (wheel,) = (out / "dist").glob("kdscene-*.whl")
    venv = out / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    # this environment's packages for the dependencies; its editable kdscene finder is not activated
    (purelib / "_kdscene_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q"]
    subprocess.run([*install, "--no-deps", str(wheel)], check=True, capture_output=True, env=_clean_env())
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**_clean_env(), "KDSCENE_ROOT": str(cwd), "WANDB_MODE": "disabled"}
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


@pytest.mark.slow
def test_the_wheel_holds_configs_license_and_type_marker(wheel_env, tmp_path):
    code = (
        "import kdscene, kdscene.cli.config as c, pathlib; p = pathlib.Path(kdscene.__file__).parent; "
        "print(p); print(c.CONFIG_DIR); assert (p / 'py.typed').is_file()"
    )
    result = _run(wheel_env, str(wheel_env / "bin" / "python"), "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    package, config_dir = result.stdout.split()
    assert package.startswith(str(wheel_env)) and config_dir == f"{package}/conf"
    assert len(list(Path(config_dir).rglob("*.yaml"))) >= 50
    licenses = list(wheel_env.rglob("kdscene-*.dist-info/**/LICENSE*"))
    assert licenses and "MIT License" in licenses[0].read_text()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["kdscene-train", "kdscene-eval", "kdscene-quickstart", "kdscene-cache"])
def test_every_command_of_the_wheel_answers_help_from_another_folder(wheel_env, tmp_path, command):
    start = time.perf_counter()
    result = _run(wheel_env, str(wheel_env / "bin" / command), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "distill" in result.stdout or "--methods" in result.stdout
    assert time.perf_counter() - start < 20  # no torch import behind --help (typically < 1 s)


@pytest.mark.slow
def test_a_one_batch_job_runs_from_the_wheel_with_a_users_own_config_folder(wheel_env, tmp_path):
    mine = tmp_path / "my_conf" / "distill"
    mine.mkdir(parents=True)
    (mine / "my_kd.yaml").write_text(
        "terms:\n  ce: {_target_: kdscene.losses.CrossEntropyLoss, _partial_: true, weight: 0.5}\n"
        "  kd: {_target_: kdscene.losses.KDLoss, _partial_: true, temperature: 2.0}\n"
    )
    args = [
        f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]",
        "distill=my_kd",
        "debug=fdr",
        "data.reader.num_classes=4",
        "data.reader.train_per_class=4",
        "data.reader.test_per_class=2",
        "data.batch_size=4",
        "teacher.name=resnet10",
    ]
    result = _run(wheel_env, str(wheel_env / "bin" / "kdscene-train"), *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/acc_top1" in result.stdout + result.stderr
