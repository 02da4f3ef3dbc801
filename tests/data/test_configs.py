"""Every conf/data/*.yaml instantiates its DataModule with the stated recipe on a miniature layout."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.data import layouts

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"
WRITERS = {
    "places365": (layouts.make_places365_devkit, 4),
    "ade20k": (layouts.make_ade20k, 5),
    "sun397": (layouts.make_sun397, 4),
    "cifar100": (layouts.make_cifar100, 100),
    "mit_indoor": (layouts.make_mit_indoor, 3),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_data_config_instantiates_and_reads_the_layout(tmp_path, name):
    write, num_classes = WRITERS[name]
    write(tmp_path)
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg.root = str(tmp_path)
    dm = instantiate(cfg)
    assert dm.num_classes == num_classes
    if name == "cifar100":
        assert (dm.image_size, dm.crop_padding, dm.batch_size) == (32, 4, 64)
    else:  # the DCT recipe
        assert (dm.resize, dm.image_size, dm.train_crop, dm.hflip) == (256, 224, "random", True)
    assert len(dm.mean) == len(dm.std) == 3
