"""Log a labelled panel of where teacher and student look, and of what the DCT loss compares.

Every ``every_n_epochs`` epochs, for a few images spread evenly over the first validation batch (its
first and last included: validation lists are often sorted by class), the callback builds the panel
of :mod:`kdscene.callbacks.panel` (one row per image: the input, then per tapped layer the teacher's
and the student's attention maps over the image and the DCT frequency maps of the same maps, every
cell titled) and draws it (:mod:`kdscene.callbacks.render`): with matplotlib when it is
installed, otherwise as a plain grid whose text legend names every row and column. The spectra use
the variant of the run's :class:`~kdscene.losses.DCTAttentionLoss` term (``"submission"`` without
one). The same picture goes to every logger:

* W&B (a logger with ``log_image``): image ``val/attention_maps`` at the global step, with a caption;
* TensorBoard (an experiment with ``add_image``): image ``val/attention_maps`` at the epoch, and the
  legend as text ``val/attention_maps_legend``;
* any other logger with a folder (CSV): ``<log_dir>/attention_maps/epoch<NNN>.png``, and the legend
  beside it as ``epoch<NNN>.txt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torchvision.utils import save_image

from kdscene.callbacks.panel import DISPLAY_EPS, Panel, build_panel
from kdscene.callbacks.render import matplotlib_available, render_figure, render_grid
from kdscene.losses import DCTAttentionLoss

Renderer = Literal["auto", "matplotlib", "grid"]
TAG = "val/attention_maps"
VARIANTS = ("submission", "final", "dct2")


@dataclass(frozen=True)
class Picture:
    """A drawn panel: RGB pixels (3, H, W) in [0, 1], its legend, heading, and whether it has titles."""

    image: Tensor
    legend: str
    heading: str
    labelled: bool


def dct_settings(pl_module: Any) -> tuple[str, float] | None:
    """``(variant, eps)`` of the first :class:`DCTAttentionLoss` in ``pl_module.distill``, if any."""
    distill = getattr(pl_module, "distill", None)
    if distill is None:
        return None
    for module in distill.modules():
        if isinstance(module, DCTAttentionLoss):
            return module.variant, module.eps
    return None


def spread(size: int, count: int) -> Tensor:
    """``min(count, size)`` indices spread evenly over ``range(size)``, first and last included.

    Args:
        size: the batch size.
        count: how many indices are wanted.

    Returns:
        Increasing int64 indices, e.g. ``spread(128, 4)`` = ``[0, 42, 85, 127]``.
    """
    count = min(count, size)
    if count <= 1:
        return torch.zeros(count, dtype=torch.long)
    return torch.div(torch.arange(count) * (size - 1) + (count - 1) // 2, count - 1, rounding_mode="floor")


def _classes(trainer: L.Trainer) -> Sequence[str] | None:
    """The data module's class names in label order, when it has them."""
    classes = getattr(getattr(trainer, "datamodule", None), "classes", None)
    return classes if isinstance(classes, Sequence) and not isinstance(classes, str) else None


class AttentionMapLogger(L.Callback):
    """Log a labelled panel of teacher and student attention maps and their DCT spectra.

    Args:
        num_images: how many images of the first validation batch to show (one row each), spread evenly
            over the batch (:func:`spread`).
        every_n_epochs: log at epochs 0, n, 2n, ...
        variant: the DCT variant of the spectra (``"submission"``, ``"final"``, ``"dct2"``); ``None``
            (default) takes the run's DCT term's, or ``"submission"`` when the run has none.
        renderer: ``"matplotlib"`` (titles and colour bars; needs matplotlib), ``"grid"`` (a plain grid
            and a text legend; no extra dependency) or ``"auto"`` (default: matplotlib when installed).

    Raises:
        ValueError: an unknown ``variant`` or ``renderer``.
        ImportError: ``renderer="matplotlib"`` without matplotlib installed.
    """

    def __init__(
        self,
        num_images: int = 4,
        every_n_epochs: int = 1,
        variant: str | None = None,
        renderer: Renderer = "auto",
    ) -> None:
        if variant is not None and variant not in VARIANTS:
            raise ValueError(
                f"AttentionMapLogger: variant must be one of {VARIANTS} or None, got {variant!r}"
            )
        if renderer not in ("auto", "matplotlib", "grid"):
            raise ValueError(
                f"AttentionMapLogger: renderer must be auto, matplotlib or grid, got {renderer!r}"
            )
        if renderer == "matplotlib" and not matplotlib_available():
            raise ImportError(
                "AttentionMapLogger(renderer='matplotlib') needs matplotlib: pip install matplotlib"
            )
        self.num_images = num_images
        self.every_n_epochs = max(every_n_epochs, 1)
        self.variant = variant
        self.renderer = renderer

    def spectrum_settings(self, pl_module: Any) -> tuple[str, float]:
        """The DCT ``(variant, eps)`` of the spectra: the option, else the run's DCT term's, else default."""
        found = dct_settings(pl_module)
        variant = self.variant or (found[0] if found else "submission")
        return variant, (found[1] if found and found[1] > 0 else DISPLAY_EPS)

    @torch.no_grad()
    def panel(
        self,
        pl_module: Any,
        images: Tensor,
        labels: Tensor | None = None,
        classes: Sequence[str] | None = None,
    ) -> Panel:
        """The panel of ``num_images`` of ``images``, spread over the batch (:func:`spread`).

        Args:
            pl_module: a module with ``features(images) -> (student, teacher)`` (teacher may be ``None``)
                and, optionally, the loss terms in ``distill`` (for the DCT variant).
            images: the batch.
            labels: its labels, for the row titles.
            classes: class names in label order.

        Returns:
            The :class:`~kdscene.callbacks.panel.Panel`.
        """
        if not callable(getattr(pl_module, "features", None)):
            raise TypeError(
                f"AttentionMapLogger needs a module with features(images) -> (student, teacher) Features, "
                f"such as kdscene.module.DistillationModule; got {type(pl_module).__name__}"
            )
        picked = spread(images.shape[0], self.num_images)
        images = images[picked.to(images.device)]
        labels = labels[picked.to(labels.device)] if labels is not None else None
        student, teacher = pl_module.features(images)
        variant, eps = self.spectrum_settings(pl_module)
        return build_panel(images, student, teacher, labels, classes, variant, eps, picked.tolist())

    def draw(self, panel: Panel, heading: str) -> Picture:
        """Render ``panel`` with the configured renderer."""
        labelled = self.renderer == "matplotlib" or (self.renderer == "auto" and matplotlib_available())
        image = render_figure(panel, heading) if labelled else render_grid(panel)
        return Picture(image, panel.legend(heading), heading, labelled)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero or not trainer.loggers:
            return
        if trainer.current_epoch % self.every_n_epochs:
            return
        labels = batch[1] if len(batch) > 1 else None
        panel = self.panel(pl_module, batch[0], labels, _classes(trainer))
        heading = f"{TAG}, epoch {trainer.current_epoch} (step {trainer.global_step})"
        self.log_picture(trainer, self.draw(panel, heading))

    def log_picture(self, trainer: L.Trainer, picture: Picture) -> None:
        """Hand ``picture`` to every logger: W&B ``log_image``, TensorBoard ``add_image``, else a PNG."""
        epoch = trainer.current_epoch
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                caption = picture.heading if picture.labelled else picture.legend
                logger.log_image(key=TAG, images=[picture.image], step=trainer.global_step, caption=[caption])
            elif hasattr(getattr(logger, "experiment", None), "add_image"):
                _to_tensorboard(logger.experiment, picture, epoch)
            elif getattr(logger, "log_dir", None):
                write_picture(picture, Path(logger.log_dir) / "attention_maps" / f"epoch{epoch:03d}.png")


def _to_tensorboard(writer: Any, picture: Picture, epoch: int) -> None:
    """The image, and the legend as text (indented: TensorBoard shows it preformatted)."""
    writer.add_image(TAG, picture.image, epoch)
    if hasattr(writer, "add_text"):
        writer.add_text(f"{TAG}_legend", "    " + picture.legend.replace("\n", "\n    "), epoch)


def write_picture(picture: Picture, path: Path) -> None:
    """``picture`` as a PNG at ``path`` and its legend beside it (same name, ``.txt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(picture.image, path)
    path.with_suffix(".txt").write_text(picture.legend)
