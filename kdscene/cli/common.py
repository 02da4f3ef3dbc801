"""Shared CLI helpers: the config folder, instantiating groups, and composing configs in-process."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from kdscene.models import BackboneSpec

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict group (callbacks, loggers) that has a ``_target_``."""
    if not group:
        return []
    return [
        instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node
    ]


def backbone_spec(node: DictConfig | None, num_classes: int) -> BackboneSpec | None:
    """Instantiate a teacher/student config, filling ``num_classes`` from the data when it is null."""
    if node is None:
        return None
    spec: BackboneSpec = instantiate(node, _convert_="all")
    if spec.num_classes is None:
        spec.num_classes = num_classes
    elif spec.num_classes != num_classes:
        raise ValueError(
            f"backbone {spec.name!r} is configured for {spec.num_classes} classes but the data has "
            f"{num_classes}; set num_classes: null to take it from the data"
        )
    return spec


def compose_config(config_name: str, overrides: Sequence[str], output_dir: str | Path) -> DictConfig:
    """Compose a config as ``@hydra.main`` would, for running jobs inside one Python process."""
    from hydra import compose, initialize_config_dir

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
