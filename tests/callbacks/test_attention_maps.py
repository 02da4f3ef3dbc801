"""The attention-map panel: its cells (golden colours), its layout and titles, and its three sinks."""

from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers.logger import Logger
from PIL import Image
from torch import nn

import kdscene.callbacks.attention_maps as attention_maps
from kdscene.callbacks import AttentionMapLogger
from kdscene.callbacks.attention_maps import spread
from kdscene.callbacks.panel import VIRIDIS, build_panel, colourise
from kdscene.features import Features
from kdscene.losses import CrossEntropyLoss, DCTAttentionLoss, KDLoss
from kdscene.models import BackboneSpec
from kdscene.module import DistillationModule
from tests.helpers import TinyDataModule, make_module, tiny_trainer

TAG = "val/attention_maps"
# matplotlib's viridis and inferno at 0 and 1 (and viridis at 1/2), hand-copied from its tables
VIRIDIS_0, VIRIDIS_HALF, VIRIDIS_1 = (0.267, 0.005, 0.329), (0.128, 0.567, 0.551), (0.993, 0.906, 0.144)
INFERNO_0, INFERNO_1 = (0.001, 0.000, 0.014), (0.988, 0.998, 0.645)
# make_module's networks tap layer1..layer3; with both networks a row is the input + 3 x 4 cells
COLUMNS = [
    "input",
    *(
        f"{net} layer{i} {kind}"
        for i in (1, 2, 3)
        for kind in ("attention", "DCT spectrum")
        for net in ("teacher", "student")
    ),
]
# the matplotlib picture of 2 rows x 13 columns: (13 x 1.4 in + 1.4 in colour bars) x (2 x 1.4 in + 0.4 in
# heading), at 80 dpi
FIGURE_PX = (1568, 256)
GRID_PX = (13 * 34 + 2, 2 * 34 + 2)  # the plain grid: 32 px cells with 2 px padding


def rgb(colour):
    return torch.tensor(colour).view(3, 1, 1)


class FixedFeatures(nn.Module):
    """A stand-in LightningModule: fixed features, and optionally a DCT term in ``distill``."""

    def __init__(self, student: Features, teacher: Features | None, dct_variant: str | None = None) -> None:
        super().__init__()
        self.fixed = (student, teacher)
        terms = {"dct": DCTAttentionLoss(variant=dct_variant)} if dct_variant else {}
        self.distill = nn.ModuleDict({"ce": CrossEntropyLoss(), **terms})

    def features(self, images):
        return self.fixed


def test_colourise_interpolates_the_viridis_table():
    out = colourise(torch.tensor([[0.0, 0.5, 1.0, 1 / 16]]), VIRIDIS)
    assert out.shape == (3, 1, 4)
    expected = [
        VIRIDIS_0,
        VIRIDIS_HALF,
        VIRIDIS_1,
        ((0.267 + 0.279) / 2, (0.005 + 0.175) / 2, (0.329 + 0.483) / 2),
    ]
    torch.testing.assert_close(out[:, 0].T, torch.tensor(expected), atol=1e-6, rtol=0)


def test_attention_cell_is_viridis_over_the_dimmed_image_brightest_where_the_energy_is():
    fmap = torch.zeros(1, 2, 4, 4)
    fmap[0, 0, 1, 2] = 3.0  # all the energy at one pixel: normalised to 1 there, 0 elsewhere
    images = torch.full((1, 3, 4, 4), 0.4)
    images[0, :, 0, 0] = 0.0  # min-max per image: pixel (0, 0) is black, the rest white (1.0)
    panel = build_panel(images, Features(maps=(fmap,), names=("conv",)), None)
    cell = panel.cells[0, 1]  # input, student conv attention, student conv DCT spectrum
    # 0.65 x viridis + 0.35 x (0.5 x grey image)
    torch.testing.assert_close(cell[:, 1, 2], 0.65 * torch.tensor(VIRIDIS_1) + 0.35 * 0.5, atol=1e-6, rtol=0)
    torch.testing.assert_close(cell[:, 3, 3], 0.65 * torch.tensor(VIRIDIS_0) + 0.35 * 0.5, atol=1e-6, rtol=0)
    torch.testing.assert_close(cell[:, 0, 0], 0.65 * torch.tensor(VIRIDIS_0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("variant", ["submission", "final"])
def test_spectrum_cell_uses_the_runs_dct_variant_one_block_per_coefficient(variant):
    # A = F^2 = [[0, 1], [1, 1]]; centred z = [[-3/4, 1/4], [1/4, 1/4]];
    # Re DFT (by hand) = [[0, -1], [-1, -1]].
    # submission: |D| = [[0, 1], [1, 1]], (x - min) / max -> [[0, 1], [1, 1]];
    # final: D, (x - min) / (max - min) -> [[1, 0], [0, 0]].
    fmap = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    student = Features(maps=(fmap,), names=("conv",))
    module = FixedFeatures(student, None, dct_variant=variant)
    panel = AttentionMapLogger(num_images=1).panel(module, torch.rand(1, 3, 4, 4))
    assert [c.label for c in panel.columns] == [
        "input",
        "student conv attention",
        "student conv DCT spectrum",
    ]
    corner, rest = (INFERNO_0, INFERNO_1) if variant == "submission" else (INFERNO_1, INFERNO_0)
    spectrum = panel.cells[0, 2]
    for y, x in [(0, 0), (0, 1), (1, 0), (1, 1)]:  # coefficient (0, 0) fills the top-left 2x2 block
        torch.testing.assert_close(spectrum[:, y, x], torch.tensor(corner), atol=1e-5, rtol=0)
    for y, x in [(0, 2), (3, 0), (3, 3)]:
        torch.testing.assert_close(spectrum[:, y, x], torch.tensor(rest), atol=1e-5, rtol=0)
    assert f"variant={variant!r}" in panel.legend("heading")


def test_spectra_default_to_the_submission_variant_without_a_dct_term():
    module = FixedFeatures(Features(maps=(torch.rand(1, 4, 2, 2),)), None)
    assert AttentionMapLogger().spectrum_settings(module)[0] == "submission"
    assert AttentionMapLogger(variant="dct2").spectrum_settings(module)[0] == "dct2"


def test_taps_of_different_counts_and_sizes_give_one_column_per_existing_map():
    teacher = Features(
        logits=torch.tensor([[0.0, 5.0], [5.0, 0.0]]),
        maps=(torch.rand(2, 8, 8, 8), torch.rand(2, 16, 4, 4), torch.rand(2, 32, 1, 1)),
        names=("t1", "t2", "t3"),
    )
    student = Features(
        logits=torch.tensor([[5.0, 0.0], [5.0, 0.0]]),
        maps=(torch.rand(2, 4, 16, 16), torch.rand(2, 8, 2, 2)),
        names=("s1", "s2"),
    )
    panel = build_panel(
        torch.rand(2, 3, 16, 16), student, teacher, torch.tensor([1, 1]), ["kitchen", "bedroom"]
    )
    assert [c.label for c in panel.columns] == [
        "input",
        *(
            "teacher t1 attention",
            "student s1 attention",
            "teacher t1 DCT spectrum",
            "student s1 DCT spectrum",
        ),
        *(
            "teacher t2 attention",
            "student s2 attention",
            "teacher t2 DCT spectrum",
            "student s2 DCT spectrum",
        ),
        *("teacher t3 attention", "teacher t3 DCT spectrum"),
    ]
    assert panel.cells.shape == (2, 11, 3, 16, 16)
    assert torch.isfinite(panel.cells).all() and panel.cells.min() >= 0 and panel.cells.max() <= 1
    assert panel.title(0, 0) == "#0\ntrue: bedroom\nS: kitchen\nT: bedroom"
    assert panel.title(1, 0) == "#1\ntrue: bedroom\nS: kitchen\nT: kitchen"
    assert panel.title(1, 3) == "#1 teacher\nt1\nDCT spectrum"
    legend = panel.legend("heading")
    assert (
        "  11. teacher t3 DCT spectrum" in legend
        and "  2. #1, true: bedroom, S: kitchen, T: kitchen" in legend
    )


def test_the_pictured_images_are_spread_over_the_batch_first_and_last_included():
    assert spread(128, 4).tolist() == [0, 42, 85, 127]
    assert spread(8, 2).tolist() == [0, 7]
    assert spread(3, 4).tolist() == [0, 1, 2]
    assert spread(8, 1).tolist() == [0]


def test_student_only_run_shows_the_students_attention_and_spectra(tmp_path):
    module = DistillationModule(
        student=BackboneSpec("cifar_resnet8", 3),
        distill={"ce": CrossEntropyLoss},
        optimizer=partial(torch.optim.SGD, lr=0.1),
        image_size=32,
    )
    assert module.teacher is None
    panel = AttentionMapLogger(num_images=2).panel(
        module, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    )
    assert [c.label for c in panel.columns] == ["input"] + [
        f"student layer{i} {kind}" for i in (1, 2, 3) for kind in ("attention", "DCT spectrum")
    ]
    assert panel.cells.shape == (2, 7, 3, 32, 32)
    # images 0 and 3 of the batch (spread); without class names a label is its number
    assert (
        panel.title(1, 0).startswith("#3\ntrue: 0\nS: ")
        and panel.title(1, 2) == "#3 student\nlayer1\nDCT spectrum"
    )


def test_matplotlib_figure_titles_every_cell_and_has_two_colour_bars():
    pytest.importorskip("matplotlib")
    from kdscene.callbacks.render import panel_figure

    panel = AttentionMapLogger(num_images=2).panel(make_module("at").eval(), torch.randn(2, 3, 32, 32))
    fig = panel_figure(panel, "heading")
    cells = [ax for ax in fig.axes if ax.get_images()]
    titles = [ax.get_title() for ax in cells]
    assert len(cells) == 2 * 13
    assert "#1 student\nlayer3\nDCT spectrum" in titles and "#0 teacher\nlayer2\nattention" in titles
    bars = [ax.get_ylabel() for ax in fig.axes if not ax.get_images()]
    assert sorted(bars) == ["DCT spectrum (loss normalisation)", "attention (min-max per map)"]


def fit_with(tmp_path, callback, logger=None):
    """One epoch of one batch; ``logger=None`` keeps tiny_trainer's CSV logger."""
    kw = {} if logger is None else {"logger": logger}
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[callback], **kw)
    trainer.fit(make_module("at"), datamodule=TinyDataModule())
    return trainer


def test_csv_logger_gets_a_grid_png_every_n_epochs_and_a_legend_naming_the_layers(tmp_path):
    callback = AttentionMapLogger(num_images=2, every_n_epochs=2, renderer="grid")
    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_train_batches=1, callbacks=[callback])
    trainer.fit(make_module("at"), datamodule=TinyDataModule())
    folder = Path(trainer.logger.log_dir) / "attention_maps"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch000.png", "epoch000.txt"]  # epoch 1 skipped
    assert Image.open(folder / "epoch000.png").size == GRID_PX
    legend = (folder / "epoch000.txt").read_text()
    assert "2 rows (one per image) x 13 columns." in legend
    for i, label in enumerate(COLUMNS):
        assert f"  {i + 1}. {label}\n" in legend
    assert "variant='submission'" in legend


def test_csv_logger_gets_the_matplotlib_figure(tmp_path):
    pytest.importorskip("matplotlib")
    trainer = fit_with(tmp_path, AttentionMapLogger(num_images=2))
    png = Path(trainer.logger.log_dir) / "attention_maps" / "epoch000.png"
    assert Image.open(png).size == FIGURE_PX


def test_without_matplotlib_the_panel_is_a_plain_grid_with_a_legend(monkeypatch):
    monkeypatch.setattr(attention_maps, "matplotlib_available", lambda: False)
    callback = AttentionMapLogger(num_images=2)
    picture = callback.draw(callback.panel(make_module("at").eval(), torch.randn(2, 3, 32, 32)), "heading")
    assert not picture.labelled and picture.image.shape == (3, GRID_PX[1], GRID_PX[0])
    assert picture.legend.startswith("heading\n2 rows (one per image) x 13 columns.\nColumns:\n  1. input\n")
    with pytest.raises(ImportError, match="needs matplotlib: pip install matplotlib"):
        AttentionMapLogger(renderer="matplotlib")


def test_a_matplotlib_that_cannot_be_found_counts_as_missing(monkeypatch):
    import importlib.util

    from kdscene.callbacks.render import matplotlib_available

    def broken(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", broken)
    assert matplotlib_available() is False


class ImageRecorder(Logger):
    """A W&B-like logger: records ``log_image`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.images = []

    name, version = "recorder", 0

    def log_image(self, key, images, step=None, **kwargs):
        self.images.append((key, images, step, kwargs))

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_wandb_style_logger_gets_the_figure_with_a_caption(tmp_path):
    pytest.importorskip("matplotlib")
    recorder = ImageRecorder()
    fit_with(tmp_path, AttentionMapLogger(num_images=2), recorder)
    ((key, images, step, kwargs),) = recorder.images
    assert key == TAG and step == 1  # the global step after one training batch
    assert len(images) == 1 and images[0].shape == (3, FIGURE_PX[1], FIGURE_PX[0])
    assert kwargs["caption"] == [f"{TAG}, epoch 0 (step 1)"]


def test_wandb_style_logger_gets_the_legend_as_caption_of_a_plain_grid(tmp_path):
    recorder = ImageRecorder()
    fit_with(tmp_path, AttentionMapLogger(num_images=2, renderer="grid"), recorder)
    ((_, images, _, kwargs),) = recorder.images
    assert images[0].shape == (3, GRID_PX[1], GRID_PX[0])
    assert "  13. student layer3 DCT spectrum" in kwargs["caption"][0]


def test_tensorboard_event_file_holds_the_picture_and_its_legend(tmp_path):
    pytest.importorskip("matplotlib")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path / "tb", name=None, version="")
    fit_with(tmp_path, AttentionMapLogger(num_images=2), logger)
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    (image,) = events.Images(TAG)
    assert (image.width, image.height) == FIGURE_PX and image.step == 0
    (text,) = events.Tensors(f"{TAG}_legend/text_summary")
    legend = text.tensor_proto.string_val[0].decode()
    assert "teacher layer1 DCT spectrum" in legend and "student layer3 attention" in legend


@pytest.mark.slow
def test_wandb_offline_run_stores_the_picture(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from kdscene.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    logger = WandbLogger(save_dir=str(tmp_path), project="kdscene-test", offline=True)
    try:
        fit_with(tmp_path, AttentionMapLogger(num_images=2), logger)
    finally:
        import wandb

        wandb.finish()
    (png,) = tmp_path.rglob("media/images/val/attention_maps_*.png")
    assert Image.open(png).size == FIGURE_PX


def test_unknown_variant_or_renderer_is_refused():
    with pytest.raises(ValueError, match="variant must be one of"):
        AttentionMapLogger(variant="fft")
    with pytest.raises(ValueError, match="renderer must be"):
        AttentionMapLogger(renderer="svg")


def test_kd_only_run_without_maps_in_the_loss_still_pictures_both_networks():
    module = DistillationModule(
        student=BackboneSpec("cifar_resnet8", 3, layers=["layer2", "layer3"]),
        teacher=BackboneSpec("cifar_resnet14", 3),
        distill={"ce": CrossEntropyLoss, "kd": KDLoss},
        optimizer=partial(torch.optim.SGD, lr=0.1),
        image_size=32,
    ).eval()
    panel = AttentionMapLogger(num_images=1).panel(module, torch.randn(1, 3, 32, 32))
    labels = [c.label for c in panel.columns]
    assert labels[1:5] == [
        "teacher layer1 attention",
        "student layer2 attention",
        "teacher layer1 DCT spectrum",
        "student layer2 DCT spectrum",
    ]
    assert labels[-2:] == ["teacher layer3 attention", "teacher layer3 DCT spectrum"]
