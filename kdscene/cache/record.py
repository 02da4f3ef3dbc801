"""Record a teacher cache in one offline pass, and verify recorded views against the live teacher.

:func:`record_cache` runs the frozen teacher once over every training image under each of K
augmentation draws: view ``(k, i)`` is the data module's training transform under
``view_seed(sampling_seed, k, i)``, exactly the view a training run shows in every epoch ``e`` with
``e mod K = k`` (``SceneDataModule(view_cycle=K)``). It stores the logits and per-tap channel energy
(:mod:`kdscene.cache.store`). :func:`verify_cache` recomputes a sample of views with the live teacher
and raises when one differs by more than :data:`VERIFY_RTOL` of its row's largest value (float16 keeps
11 significant bits, a relative error of at most 4.9e-4; a different view differs by far more).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from kdscene.cache.header import FORMAT, VERSION, CacheMismatchError, run_description, weights_sha256
from kdscene.cache.store import CacheWriter, TeacherCache
from kdscene.data.dataset import DropSkipped
from kdscene.data.sampling import Key, view_seed
from kdscene.features import FeatureTap, TapInfo, probe
from kdscene.losses.dct import channel_energy
from kdscene.models import BackboneSpec, build_backbone

if TYPE_CHECKING:
    from kdscene.data import SceneDataModule

log = logging.getLogger(__name__)

VERIFY_RTOL = 2e-3  # of a row's largest magnitude: 4x float16's rounding, far below a wrong view's error


@dataclasses.dataclass
class LiveTeacher:
    """The teacher network in eval mode on ``device``, its tap and its spec (taps resolved)."""

    network: nn.Module
    tap: FeatureTap
    spec: BackboneSpec
    device: torch.device

    @classmethod
    def build(
        cls, spec: BackboneSpec, device: str | torch.device, channels_last: bool = False
    ) -> LiveTeacher:
        """Build ``spec`` with its weights, frozen, in eval mode, tapped at its layers."""
        spec = dataclasses.replace(spec)
        network = build_backbone(spec).to(device).eval().requires_grad_(False)
        if channels_last:
            network.to(memory_format=torch.channels_last)
        return cls(network, FeatureTap(network, spec.tap_layers, spec.tap_head), spec, torch.device(device))

    @torch.no_grad()
    def __call__(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and per-tap channel energy (float32) of a batch."""
        images = images.to(self.device)
        if next(self.network.parameters()).is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)
        feats = self.tap(images)
        return feats.logits.float(), [channel_energy(m) for m in feats.maps]


def _loader(datamodule: SceneDataModule, keys: Sequence[Key], batch_size: int) -> DataLoader:
    """Batches ``(images, labels, indices)`` of the training split under the given ``(draw, index)`` keys."""
    dataset = datamodule.datasets["train"]
    dataset.return_index = True
    shape = (3, datamodule.image_size, datamodule.image_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=list(keys),
        num_workers=datamodule.num_workers,
        collate_fn=DropSkipped(shape, with_index=True),
    )


def _header(
    datamodule: SceneDataModule, teacher: LiveTeacher, taps: list[TapInfo], views: int, dtype: str
) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        **run_description(datamodule, teacher.spec),
        "views": views,
        "view": "the training transform under kdscene.data.sampling.view_seed(sampling_seed, draw, index)",
        "dtype": dtype,
        "num_classes": teacher.spec.num_classes,
        "taps": [dataclasses.asdict(t) for t in taps],
        "teacher_weights_sha256": weights_sha256(teacher.network),
    }


def _record_draw(
    writer: CacheWriter, live: LiveTeacher, datamodule: SceneDataModule, draw: int, batch_size: int
) -> int:
    """Write draw ``draw`` of every training image; returns how many the teacher classified correctly."""
    size, seed = len(datamodule.datasets["train"]), datamodule.sampling_seed
    correct = 0
    for images, labels, indices in _loader(datamodule, [(draw, i) for i in range(size)], batch_size):
        logits, energy = live(images)
        seeds = torch.tensor([view_seed(seed, draw, int(i)) for i in indices], dtype=torch.int64)
        writer.write(draw, indices, seeds, logits, energy)
        correct += int((logits.argmax(1).cpu() == labels).sum())
    return correct


def record_cache(
    datamodule: SceneDataModule,
    teacher: BackboneSpec,
    path: str | Path,
    views: int,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    dtype: str = "float16",
    channels_last: bool = False,
) -> TeacherCache:
    """One pass of the teacher over K draws of every training image; returns the written cache.

    Args:
        datamodule: the run's data (its training split, transform and sampling seed are recorded).
        teacher: the teacher's spec (network, weights, taps) as the training run builds it.
        path: the cache folder to create.
        views: K, the augmentation draws per image; training epoch ``e`` replays draw ``e mod K``.
        batch_size: images per teacher forward (default: the data module's).
        device: where the teacher runs.
        dtype: ``"float16"`` or ``"float32"`` storage.
        channels_last: run the teacher in channels-last memory format.

    Returns:
        The cache, opened for reading.
    """
    if views < 1:
        raise ValueError(f"cache.views must be >= 1, got {views}")
    datamodule.prepare_data()
    datamodule.setup("fit")
    live = LiveTeacher.build(teacher, device, channels_last)
    taps = probe(live.tap, datamodule.image_size)
    writer = CacheWriter(path, _header(datamodule, live, taps, views, dtype), taps, dtype)
    correct, start = 0, time.perf_counter()
    for draw in range(views):
        correct += _record_draw(writer, live, datamodule, draw, batch_size or datamodule.batch_size)
        log.info("teacher cache: draw %d/%d recorded (%.0f s)", draw + 1, views, time.perf_counter() - start)
    writer.header["teacher_train_acc_top1"] = correct / max(len(datamodule.datasets["train"]) * views, 1)
    return writer.finish()


def _sample_keys(cache: TeacherCache, samples: int) -> list[Key]:
    """``samples`` distinct views spread over the draws (a fixed generator: the same on every run)."""
    total = cache.views * cache.num_images
    picked = torch.randperm(total, generator=torch.Generator().manual_seed(0))[: min(samples, total)]
    return [(int(p) // cache.num_images, int(p) % cache.num_images) for p in picked.sort().values]


def _worst(cached: Tensor, live: Tensor) -> float:
    """The largest error of any row, relative to that row's largest live magnitude."""
    flat_c, flat_l = cached.flatten(1), live.flatten(1)
    scale = flat_l.abs().amax(dim=1).clamp_min(1e-12)
    return float(((flat_c - flat_l).abs().amax(dim=1) / scale).max())


def verify_cache(
    cache: TeacherCache,
    datamodule: SceneDataModule,
    teacher: BackboneSpec,
    samples: int,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Recompute ``samples`` recorded views with the live teacher; raise on any mismatch.

    Args:
        cache: the cache to check.
        datamodule: the run's data module, set up.
        teacher: the teacher's spec.
        samples: number of views to recompute.
        device: where the teacher runs.

    Returns:
        ``{"views": checked, "max_rel_error": {field: worst error}}``.

    Raises:
        CacheMismatchError: the teacher's weights differ from the recorded ones, or a view's logits or
            energy differ by more than :data:`VERIFY_RTOL` of the row's largest magnitude.
    """
    live = LiveTeacher.build(teacher, device)
    if weights_sha256(live.network) != cache.header["teacher_weights_sha256"]:
        raise CacheMismatchError(
            f"teacher cache {str(cache.path)!r}: the teacher's weights are not the recorded ones"
        )
    keys = _sample_keys(cache, samples)
    errors: dict[str, float] = {}
    for draw in sorted({k for k, _ in keys}):
        chosen = [key for key in keys if key[0] == draw]
        for images, _, indices in _loader(datamodule, chosen, datamodule.batch_size):
            logits, energy = live(images)
            recorded = cache.features(draw, indices, device)
            for name, c, v in zip(
                ["logits", *recorded.names], [recorded.logits, *recorded.energy], [logits, *energy]
            ):
                errors[name] = max(errors.get(name, 0.0), _worst(c, v))
    bad = {k: v for k, v in errors.items() if v > VERIFY_RTOL}
    if bad:
        raise CacheMismatchError(
            f"teacher cache {str(cache.path)!r}: recomputed views differ from the recorded ones by up to "
            f"{bad} of each row's largest value (tolerance {VERIFY_RTOL}): the cache is not this "
            "teacher's on this data; record it again"
        )
    return {"views": len(keys), "max_rel_error": errors}
