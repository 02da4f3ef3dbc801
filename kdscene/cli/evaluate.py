"""``kdscene-eval``: test a trained student on one device (paper-table numbers: no DDP padding)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, open_dict

from kdscene.cli.config import CONFIG_DIR, exit_on_moved_keys
from kdscene.cli.sweep import register_dirname_resolver

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Load the student weights of ``cfg.ckpt_path`` and test them on ``cfg.split``."""
    import dataclasses
    from functools import partial

    import lightning as L
    import torch
    from hydra.utils import instantiate

    from kdscene.cli.fit import backbone_spec, instantiate_group
    from kdscene.losses import CrossEntropyLoss
    from kdscene.module import DistillationModule

    L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    spec = backbone_spec(cfg.student, datamodule.num_classes)
    module = DistillationModule(
        student=dataclasses.replace(spec, checkpoint=str(cfg.ckpt_path), init=None, weights=None),
        distill={"ce": CrossEntropyLoss()},
        optimizer=partial(torch.optim.SGD, lr=0.0),
        image_size=cfg.data.image_size,
    )
    with open_dict(cfg):
        cfg.trainer.devices = 1
        cfg.trainer.pop("strategy", None)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=instantiate_group(cfg.get("logger")) or False)
    run = trainer.validate if cfg.split == "val" else trainer.test
    results = run(module, datamodule=datamodule)[0]
    log.info("metrics: %s", results)
    return {k: float(v) for k, v in results.items()}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    """Console entry point of ``kdscene-eval``."""
    exit_on_moved_keys(sys.argv[1:])
    register_dirname_resolver()  # names a sweep's job folders (conf/hydra/default.yaml)
    _hydra_main()


if __name__ == "__main__":
    main()
