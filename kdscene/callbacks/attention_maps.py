"""Log pictures of where teacher and student look: per tap, the channel mean of F².

For the first validation batch every ``every_n_epochs`` epochs, the callback builds one grid per
image (rows: input, teacher maps, student maps; columns: taps), each map min-max normalised, and
hands it to every logger that can show images (TensorBoard ``add_image``, W&B ``log_image``); for
other loggers (CSV) it writes a PNG under the logger's directory.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid, save_image


def attention_picture(maps: tuple[Tensor, ...], index: int, size: int) -> list[Tensor]:
    """One (3, size, size) greyscale picture per tapped map of sample ``index``."""
    pictures = []
    for fmap in maps:
        am = fmap[index : index + 1].float().pow(2).mean(1, keepdim=True)
        am = F.interpolate(am, size=(size, size), mode="bilinear", align_corners=False)[0]
        am = (am - am.min()) / (am.max() - am.min()).clamp_min(1e-12)
        pictures.append(am.expand(3, -1, -1))
    return pictures


class AttentionMapLogger(L.Callback):
    """Log teacher and student attention maps of a few validation images.

    Args:
        num_images: how many images of the first validation batch to show.
        every_n_epochs: log at epochs 0, n, 2n, ...
    """

    def __init__(self, num_images: int = 4, every_n_epochs: int = 1) -> None:
        self.num_images = num_images
        self.every_n_epochs = max(every_n_epochs, 1)

    @torch.no_grad()
    def grid(self, pl_module: L.LightningModule, images: Tensor) -> Tensor:
        """A grid: each row is one image, its teacher maps, then its student maps."""
        student, teacher = pl_module.features(images)
        size = images.shape[-1]
        lo, hi = images.amin(dim=(1, 2, 3), keepdim=True), images.amax(dim=(1, 2, 3), keepdim=True)
        shown = (images - lo) / (hi - lo).clamp_min(1e-12)
        cells, per_row = [], 0
        for i in range(min(self.num_images, images.shape[0])):
            row = [shown[i].float()]
            if teacher is not None:
                row += attention_picture(teacher.maps, i, size)
            row += attention_picture(student.maps, i, size)
            cells += row
            per_row = len(row)
        return make_grid(torch.stack(cells).cpu(), nrow=per_row, padding=2)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs:
            return
        picture = self.grid(pl_module, batch[0][: self.num_images])
        self._log(trainer, picture)

    def _log(self, trainer: L.Trainer, picture: Tensor) -> None:
        tag, step = "val/attention_maps", trainer.current_epoch
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image(tag, picture, step)
            elif hasattr(logger, "log_image"):
                logger.log_image(key=tag, images=[picture], step=trainer.global_step)
            elif logger.log_dir:
                out = Path(logger.log_dir) / "attention_maps" / f"epoch{step:03d}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                save_image(picture, out)
