"""Every kdscene-train / -eval / -cache command in README.md composes: its groups and keys exist.

A README line that still names a moved or removed key fails here, not in a user's terminal. Commands
are read from the README's bash blocks (continuation lines joined, comments dropped, ``<...>``
placeholders filled); a sweep's
``a,b,c`` takes its first value; the composed config is resolved and its distill node parsed.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kdscene.cli.config import compose_config
from kdscene.cli.recipe import parse_recipe

README = Path(__file__).resolve().parents[2] / "README.md"
CONFIGS = {"kdscene-train": "train", "kdscene-cache": "train", "kdscene-eval": "eval"}


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def readme_commands() -> list[tuple[str, list[str]]]:
    """``(program, arguments)`` of each kdscene command in the README's bash blocks."""
    commands = []
    for block in _bash_blocks(README.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(re.sub(r"<[^<>]*>", "placeholder", line), comments=True)
            if words and words[0] in CONFIGS:
                commands.append((words[0], words[1:]))
    return commands


def _first_of_sweep(argument: str) -> str:
    key, _, value = argument.partition("=")
    if "," in value and not any(c in value for c in "[]{}()'\""):
        return f"{key}={value.split(',')[0]}"
    return argument


# commands that need a Hydra plugin from an extra: (what the command says, the plugin's module, the extra)
PLUGINS = [
    ("hparams_search=", "hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher", "slurm"),
]


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (hydra_plugins) is missing too
        return False


def _skip_without_plugin(arguments: list[str]) -> None:
    for marker, module, extra in PLUGINS:
        if any(a.startswith(marker) for a in arguments) and not _installed(module):
            pytest.skip(f"pip install kdscene[{extra}]")


def _overrides(arguments: list[str]) -> list[str]:
    plain = [a for a in arguments if a not in ("-m", "--multirun", "...")]
    return [_first_of_sweep(a) for a in plain]


COMMANDS = readme_commands()


def test_the_readme_has_commands_of_each_program():
    assert {program for program, _ in COMMANDS} == set(CONFIGS)
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize(("program", "arguments"), COMMANDS, ids=[" ".join(a)[:60] for _, a in COMMANDS])
def test_readme_command_composes(program, arguments, tmp_path, monkeypatch):
    _skip_without_plugin(arguments)
    monkeypatch.setenv("KDSCENE_ROOT", str(tmp_path))
    cfg = compose_config(CONFIGS[program], _overrides(arguments), tmp_path / "run")
    plain = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert plain["data"]["_target_"]
    if program != "kdscene-eval":
        recipe = parse_recipe(cfg.distill)
        assert recipe.stages
