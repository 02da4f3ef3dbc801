"""Where kdscene's configs live, composing them in-process, and clear errors for keys that moved.

This module imports Hydra and OmegaConf only (no torch), so that ``kdscene-train --help`` and tab
completion stay fast.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from kdscene.cli.sweep import register_dirname_resolver


def _config_dir() -> str:
    """The configs: a source checkout's top-level ``conf/``, else the copy the wheel ships."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf" / "train.yaml").is_file():
        return str(checkout / "conf")
    return str(Path(__file__).resolve().parents[1] / "conf")


CONFIG_DIR = _config_dir()

# Keys that moved (old -> new, or why it went): a user who types an old key learns the new one.
MOVED_KEYS: dict[str, str] = {
    **{
        f"data.{key}": f"data.reader.{key}"  # options of one data set moved to its reader
        for key in ("partition", "layout", "train_split", "small")
        + ("num_classes", "train_per_class", "test_per_class", "seed", "generated_size")
    },
    "eval_teacher": "(removed: the teacher's accuracy is logged from every validation step)",
}
# (regular expression of an old key, its replacement) for keys with a variable part: the losses'
# tap-selection options got one name, `select` (and `teacher_select` where the teacher's differ)
_TERM = r"(distill\.(?:stages\.\w+\.)?terms\.\w+)"
MOVED_PATTERNS: tuple[tuple[str, str], ...] = (
    (_TERM + r"\.(?:scales|student_scales|student_index)", r"\1.select"),
    (_TERM + r"\.(?:teacher_scales|teacher_index)", r"\1.teacher_select"),
)


class MovedKeyError(KeyError):
    """A config key the user set has moved or been removed; the message names the new key."""

    def __str__(self) -> str:
        return str(self.args[0])


# groups whose per-network options became one default.yaml: `teacher=resnet50` is `teacher.name=resnet50`
NAMED_GROUPS = ("teacher", "student")


def _override_key(override: str) -> str | None:
    """``"+data.root=/x"`` -> ``"data.root"``; ``None`` for flags such as ``-m``."""
    if override.startswith("-") or "=" not in override:
        return None
    return override.split("=", 1)[0].lstrip("+~")


def moved_key_messages(overrides: Sequence[str]) -> list[str]:
    """One message per override whose key is in :data:`MOVED_KEYS` or matches :data:`MOVED_PATTERNS`."""
    messages = []
    for override in overrides:
        key = _override_key(override)
        if key is None:
            continue
        value = override.split("=", 1)[1]
        if key in NAMED_GROUPS and value not in ("default", "null"):
            messages.append(f"{key}={value} picked a config file per network: use {key}.name={value}")
            continue
        if key in MOVED_KEYS:
            messages.append(f"{key!r} has moved: use {MOVED_KEYS[key]}")
            continue
        for pattern, replacement in MOVED_PATTERNS:
            if re.fullmatch(pattern, key):
                messages.append(f"{key!r} has moved: use {re.sub(pattern, replacement, key)}")
                break
    return messages


def check_overrides(overrides: Sequence[str]) -> None:
    """Raise :class:`MovedKeyError` listing every override that uses a moved or removed key."""
    messages = moved_key_messages(overrides)
    if messages:
        raise MovedKeyError("\n".join(messages))


def exit_on_moved_keys(argv: Sequence[str]) -> None:
    """For console entry points: print the moved-key messages and exit with status 2."""
    messages = moved_key_messages(argv)
    if messages:
        print("kdscene: " + "\n".join(messages), file=sys.stderr)
        raise SystemExit(2)


def _job_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that define a job: without ``ckpt_path``, Hydra's own keys and flags."""
    keys = [(_override_key(o), o) for o in overrides]
    return sorted(o for k, o in keys if k and k != "ckpt_path" and not k.startswith("hydra."))


def previous_run(overrides: Sequence[str]) -> Path | None:
    """The latest run folder of the same job (same overrides, ``ckpt_path`` aside), if any.

    Runs live in ``<paths.log_dir>/<task_name>/runs/<time>`` and Hydra records each run's overrides
    in ``.hydra/overrides.yaml``; this is how ``kdscene-train ... ckpt_path=last`` finds its run.
    """
    import yaml
    from hydra import compose, initialize_config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[o for o in overrides if not o.startswith("-")])
    GlobalHydra.instance().clear()
    runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
    wanted = _job_overrides(overrides)
    for folder in sorted(runs.glob("*"), reverse=True):
        recorded = folder / ".hydra" / "overrides.yaml"
        if recorded.is_file() and _job_overrides(yaml.safe_load(recorded.read_text()) or []) == wanted:
            return folder
    return None


def resume_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``hydra.run.dir`` of the job's latest run added when it asks for ``ckpt_path=last``."""
    args = list(argv)
    multirun = any(a in ("-m", "--multirun") for a in args)
    if "ckpt_path=last" not in args or multirun or any(a.startswith("hydra.run.dir=") for a in args):
        return args
    folder = previous_run(args)
    if folder is None:
        print("kdscene: no earlier run of this job: starting a new one", file=sys.stderr)
        return args
    print(f"kdscene: continuing {folder}", file=sys.stderr)
    return [*args, f"hydra.run.dir={folder}"]


def compose_config(config_name: str, overrides: Sequence[str], output_dir: str | Path) -> DictConfig:
    """Compose a config as ``@hydra.main`` would, for running jobs inside one Python process."""
    from hydra import compose, initialize_config_dir

    check_overrides(overrides)
    register_dirname_resolver()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path(output_dir).resolve())
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    cfg.paths.output_dir = str(Path(output_dir).resolve())
    return cfg


def to_plain(cfg: DictConfig) -> dict:
    """The resolved config as plain containers, without the ``hydra`` node (for loggers)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return container
