"""CIFAR-100 reader on miniature pickles in the release's format (no download)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.datasets import CIFAR100 as TorchvisionCIFAR100

from kdscene.data import CIFAR100, CIFAR100_MEAN, CIFAR100_STD, DatasetLayoutError, SceneDataModule
from kdscene.data.sampling import view_seed
from tests.data.layouts import make_cifar100

# RepDistiller's recipe, as conf/data/cifar100.yaml sets it
RECIPE = {"image_size": 32, "resize": None, "crop_padding": 4, "mean": CIFAR100_MEAN, "std": CIFAR100_STD}


def _dm(root, **options):
    return SceneDataModule(CIFAR100(root), **{**RECIPE, "batch_size": 4, "num_workers": 0, **options})


def _labels(dataset):
    return [y for _, y in dataset.samples]


def test_classes_are_the_fine_label_names_before_setup(tmp_path):
    make_cifar100(tmp_path)
    classes = CIFAR100(tmp_path).classes()
    assert len(classes) == 100
    assert classes[:2] == ["fine_00", "fine_01"] and classes[-1] == "fine_99"


def test_sample_counts_and_fine_labels(tmp_path):
    written = make_cifar100(tmp_path, n_train=10, n_test=6)
    dm = _dm(tmp_path)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 10 and len(dm.datasets["val"]) == 6
    assert _labels(dm.datasets["train"]) == written["train"][1]
    assert _labels(dm.datasets["val"]) == written["test"][1]


def test_evaluation_images_are_the_written_pixels_normalised(tmp_path):
    written = make_cifar100(tmp_path)
    dm = _dm(tmp_path)
    dm.setup("test")
    image, _ = dm.datasets["val"][2]
    pixels = torch.from_numpy(written["test"][0][2]).permute(2, 0, 1).double() / 255
    mean, std = torch.tensor(CIFAR100_MEAN).double(), torch.tensor(CIFAR100_STD).double()
    expected = (pixels - mean[:, None, None]) / std[:, None, None]
    assert image.shape == (3, 32, 32)
    torch.testing.assert_close(image.double(), expected, atol=1e-5, rtol=0)


def test_training_crops_are_windows_of_the_image_zero_padded_by_four(tmp_path):
    written = make_cifar100(tmp_path)
    dm = _dm(tmp_path, hflip=False, mean=(0, 0, 0), std=(1, 1, 1))
    dm.setup("fit")
    original = torch.from_numpy(written["train"][0][0]).permute(2, 0, 1).float() / 255
    padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
    windows = {(i, j): padded[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)}
    offsets = set()
    for epoch in range(30):  # one view per epoch
        crop = dm.datasets["train"][(epoch, 0)][0]
        found = [k for k, w in windows.items() if torch.allclose(crop, w, atol=1e-6)]
        assert found, "a training crop is not a window of the 4-padded image"
        offsets.add(found[0])
    assert len(offsets) > 5


def test_arrays_equal_torchvision_cifar100_when_its_md5_check_is_patched(tmp_path, monkeypatch):
    make_cifar100(tmp_path)
    monkeypatch.setattr(TorchvisionCIFAR100, "_check_integrity", lambda self: True)
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda path, md5=None: True)
    dm = _dm(tmp_path)
    dm.setup("fit")
    for split, train in (("train", True), ("val", False)):
        reference = TorchvisionCIFAR100(tmp_path, train=train, download=False)
        dataset = dm.datasets[split]
        images = np.stack([np.asarray(dataset.reader.load(item)) for item, _ in dataset.samples])
        assert np.array_equal(images, reference.data)
        assert _labels(dataset) == reference.targets
        assert dm.classes == reference.classes


def test_root_may_be_the_cifar_folder_itself(tmp_path):
    make_cifar100(tmp_path)
    assert len(CIFAR100(tmp_path / "cifar-100-python").classes()) == 100


def _old_pipeline(train, image_size, resize, crop_padding):
    """The transforms of the former CIFAR-only DataModule, built by hand with torchvision."""
    steps = [T.Resize(resize)] if resize else []
    if train:
        steps += [T.RandomCrop(image_size, padding=crop_padding or None), T.RandomHorizontalFlip()]
    elif resize and resize != image_size:
        steps.append(T.CenterCrop(image_size))
    return T.Compose([*steps, T.ToTensor(), T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])


@pytest.mark.parametrize(("image_size", "resize", "crop_padding"), [(32, None, 4), (48, 56, 0)])
def test_tensors_equal_the_former_cifar_pipeline_on_the_raw_array(tmp_path, image_size, resize, crop_padding):
    written = make_cifar100(tmp_path)
    dm = _dm(tmp_path, image_size=image_size, resize=resize, crop_padding=crop_padding)
    dm.setup("fit")
    for split, file, train in (("train", "train", True), ("val", "test", False)):
        reference = _old_pipeline(train, image_size, resize, crop_padding)
        for i, raw in enumerate(written[file][0]):
            ours, label = dm.datasets[split][(100 + i, i)]  # epoch 100 + i
            torch.manual_seed(view_seed(dm.sampling_seed, 100 + i, i))  # the view's declared generator
            expected = reference(Image.fromarray(raw))
            assert torch.equal(ours, expected) and label == written[file][1][i]


def test_resize_gives_larger_images(tmp_path):
    make_cifar100(tmp_path)
    dm = _dm(tmp_path, image_size=48, resize=56, crop_padding=0)
    dm.setup("fit")
    assert dm.datasets["train"][0][0].shape == (3, 48, 48) and dm.datasets["val"][0][0].shape == (3, 48, 48)


def test_loader_batches(tmp_path):
    make_cifar100(tmp_path)
    x, y = next(iter(_dm(tmp_path, batch_size=4).train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64


def test_a_wrong_root_shows_the_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist") as err:
        CIFAR100(tmp_path / "nowhere").classes()
    assert "cifar-100-python/meta" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="missing file .*meta"):
        CIFAR100(tmp_path / "empty").classes()


def test_a_missing_split_file_is_named(tmp_path):
    make_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(DatasetLayoutError, match="missing file .*cifar-100-python/test"):
        _dm(tmp_path).setup("test")


def test_a_corrupt_pickle_is_named(tmp_path):
    make_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetLayoutError, match="cifar-100-python/train is not a CIFAR pickle"):
        _dm(tmp_path).setup("fit")


def test_a_pickle_of_the_wrong_shape_is_named(tmp_path):
    import pickle

    make_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "fine_labels": [0, 1]}, f)
    with pytest.raises(DatasetLayoutError, match="test must hold 'data' \\(N, 3072\\)"):
        _dm(tmp_path).setup("test")
