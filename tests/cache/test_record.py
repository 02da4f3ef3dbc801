"""kdscene-cache records, per view (draw, image), the teacher's logits and channel energy of that very view;
verification recomputes views with the live teacher and catches a wrong row."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torchvision
from hydra.utils import instantiate

from kdscene.cache import VERIFY_RTOL, CacheMismatchError, TeacherCache, verify_cache
from kdscene.cli.config import compose_config
from kdscene.data.sampling import view_seed
from kdscene.models import BackboneSpec
from tests.cache.conftest import VIEWS, run_overrides


@pytest.fixture
def run(synthetic_root, teacher_file, tmp_path):
    """The tiny run's data module (set up) and teacher spec."""
    cfg = compose_config("train", run_overrides(synthetic_root, teacher_file, tmp_path), tmp_path / "out")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return datamodule, BackboneSpec("resnet10", 4, checkpoint=teacher_file)


def _reference(teacher_file: str, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and (1/C)·Σ_c F_c² of the four stages in float64, by an explicit forward of the ResNet."""
    net = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=4)
    net.load_state_dict(torch.load(teacher_file))
    net = net.double().eval()
    with torch.no_grad():
        x = net.maxpool(net.relu(net.bn1(net.conv1(image[None].double()))))
        energies = []
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            x = stage(x)
            energies.append((x**2).sum(dim=1) / x.shape[1])
        logits = net.fc(torch.flatten(net.avgpool(x), 1))
    return logits[0], [e[0] for e in energies]


def test_each_row_holds_the_teacher_outputs_of_its_view(recorded, run, teacher_file):
    datamodule, _ = run
    cache = TeacherCache(recorded)
    dataset = datamodule.datasets["train"]
    for draw, index in [(0, 0), (0, 17), (1, 0), (1, 31)]:
        image = dataset[(draw, index)][0]  # the view the training run shows in epochs with e mod K = draw
        logits, energy = _reference(teacher_file, image)
        row = cache.features(draw, torch.tensor([index]))
        for got, want in zip([row.logits[0], *[e[0] for e in row.energy]], [logits, *energy]):
            # float16 storage: 11 significant bits, a relative error of at most 2^-11 per value
            torch.testing.assert_close(got.double(), want, rtol=2**-11, atol=1e-6 * float(want.abs().max()))
    assert cache.arrays["view_seed"][1, 17] == view_seed(datamodule.sampling_seed, 1, 17)


def test_two_draws_of_one_image_are_two_views(recorded):
    cache = TeacherCache(recorded)
    first, second = (cache.features(k, torch.arange(32)).energy[0] for k in range(VIEWS))
    assert not torch.allclose(first, second)  # random crops: the teacher saw other pixels


def test_the_header_names_data_transform_seed_teacher_and_taps(recorded, run, teacher_file):
    datamodule, _ = run
    header = TeacherCache(recorded).header
    assert header["data"]["reader"] == "kdscene.data.synthetic.SyntheticScenes"
    assert header["data"]["num_images"] == 32 and len(header["data"]["classes"]) == 4
    assert header["transform"]["image_size"] == 48 and header["transform"]["train_crop"] == "random"
    assert header["sampling_seed"] == datamodule.sampling_seed and header["views"] == VIEWS
    assert header["teacher"]["checkpoint"] == teacher_file and header["teacher"]["file_sha256"]
    assert [t["name"] for t in header["taps"]] == ["layer1", "layer2", "layer3", "layer4"]
    assert [t["size"] for t in header["taps"]] == [[12, 12], [6, 6], [3, 3], [2, 2]]
    assert header["dtype"] == "float16"


def test_verification_passes_on_the_recorded_views(recorded, run):
    datamodule, spec = run
    report = verify_cache(TeacherCache(recorded), datamodule, spec, samples=12)
    assert report["views"] == 12
    assert max(report["max_rel_error"].values()) < VERIFY_RTOL


def test_verification_fails_on_a_row_that_is_not_the_teachers(recorded, run, tmp_path):
    datamodule, spec = run
    broken = tmp_path / "broken"
    shutil.copytree(recorded, broken)
    energy = np.load(broken / "energy_2.npy", mmap_mode="r+")
    energy[:, :, 0, 0] = 1.01 * energy.max(axis=(2, 3))  # one value per row, >= 1 % of its max off
    energy.flush()
    with pytest.raises(CacheMismatchError, match="layer3.*tolerance 0.002"):
        verify_cache(TeacherCache(broken), datamodule, spec, samples=8)


def test_verification_fails_when_the_teacher_is_another(recorded, run, tmp_path):
    datamodule, spec = run
    other = tmp_path / "other.pth"
    state = torch.load(spec.checkpoint)
    state["fc.bias"] += 1.0
    torch.save(state, other)
    with pytest.raises(CacheMismatchError, match="weights are not the recorded ones"):
        verify_cache(
            TeacherCache(recorded), datamodule, BackboneSpec("resnet10", 4, checkpoint=str(other)), 4
        )
