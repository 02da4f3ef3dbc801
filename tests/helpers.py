"""Test helpers: a tiny learnable in-memory data module and module factories."""

from __future__ import annotations

from functools import partial

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from kdscene.losses import ATLoss, CrossEntropyLoss, KDLoss
from kdscene.models import BackboneSpec
from kdscene.module import DistillationModule


class TinyDataModule(L.LightningDataModule):
    """Random images whose class shifts one colour channel: learnable within a few steps."""

    def __init__(self, num_classes: int = 3, n: int = 24, image_size: int = 32, batch_size: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.num_classes = num_classes
        self.image_size = image_size
        labels = torch.arange(n) % num_classes
        images = torch.randn(n, 3, image_size, image_size, generator=g) * 0.5
        images[:, 0] += labels[:, None, None].float() - 1
        self.dataset = TensorDataset(images, labels)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size)

    test_dataloader = val_dataloader


def tiny_scenes(root) -> list[str]:
    """Overrides for a few synthetic scenes (4 classes, 8 train + 4 test images each), two ResNet-10s."""
    return [
        f"data.root={root}",
        "data.reader.num_classes=4",
        "data.reader.train_per_class=8",
        "data.reader.test_per_class=4",
        "data.batch_size=8",
        "teacher.name=resnet10",
        "student.name=resnet10",
    ]


def make_module(
    distill: str = "at_kd", num_classes: int = 3, teacher_ckpt: str | None = None, **kw
) -> DistillationModule:
    terms = {"ce": partial(CrossEntropyLoss, weight=0.1)}
    if "kd" in distill:
        terms["kd"] = partial(KDLoss, temperature=4.0)
    if "at" in distill:
        terms["at"] = partial(ATLoss, weight=10.0)
    return DistillationModule(
        student=BackboneSpec("cifar_resnet8", num_classes),
        teacher=BackboneSpec("cifar_resnet14", num_classes, checkpoint=teacher_ckpt),
        distill=terms,
        optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        image_size=32,
        **kw,
    )


def tiny_trainer(tmp_path, **kw) -> L.Trainer:
    args = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="csv"),
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        inference_mode=False,
    )
    args.update(kw)
    return L.Trainer(**args)
