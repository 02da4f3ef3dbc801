"""DistillationModule: a frozen teacher, a trainable student and a weighted sum of loss terms.

One training step (``docs/architecture.md``): the teacher runs under ``no_grad`` in eval mode and its
:class:`~kdscene.features.FeatureTap` fills its :class:`~kdscene.features.Features`; the student runs
with grad; every distill term gets ``(student, teacher, labels)`` and returns already-weighted
scalars; the loss is their sum. The optimizer sees the student's parameters plus those the terms own
(adapters, dictionaries, filters), never the teacher's.

The teacher's weights are not written into checkpoints: the hyper-parameters record its
:class:`~kdscene.models.BackboneSpec` (name and checkpoint path) and the teacher is rebuilt from it.
With ``teacher_cache`` (a folder written by ``kdscene-cache``) no teacher is built: training steps read
the recorded logits and channel-energy maps of the batch's views (draw ``epoch mod K``) instead of
running it, and terms that need more than that are refused at construction.
Lightning warns that the teacher is "in eval mode at the start of training": that is intended.
The teacher's accuracy (``teacher/val_acc_top1``, ``teacher/val_acc_mean_class`` and the ``test``
pair) comes from the logits every validation and test step computes anyway, synced across ranks.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MaxMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from kdscene.cache import CacheMismatchError, TeacherCache, check_cacheable
from kdscene.features import Features, FeatureTap, TapInfo, probe
from kdscene.models import BackboneSpec, build_backbone, compile_network, load_checkpoint
from kdscene.nonfinite import check_terms, check_weights, nonfinite_terms
from kdscene.optim import configure, parameter_groups

LossFactory = Callable[..., nn.Module]


def _needs_teacher(term: LossFactory | nn.Module) -> bool:
    target = getattr(term, "func", term)
    return bool(getattr(target, "needs_teacher", True))


def build_term(
    factory: LossFactory | nn.Module,
    student_taps: Sequence[TapInfo],
    teacher_taps: Sequence[TapInfo],
    **context: Any,
) -> nn.Module:
    """Call a loss factory with what its constructor asks for among the probed taps and ``context``.

    ``student_taps`` and ``teacher_taps`` are passed to constructors that name them; so is each
    ``context`` entry (``num_samples``: the training set's size, for a memory bank;
    ``teacher_network``: the frozen teacher module, for a loss that reads its BatchNorm statistics).
    """
    if isinstance(factory, nn.Module):
        return factory
    target = getattr(factory, "func", factory)
    params = inspect.signature(target).parameters
    offered = {"student_taps": list(student_taps), "teacher_taps": list(teacher_taps), **context}
    wanted = {k: v for k, v in offered.items() if k in params}
    missing = [k for k, v in wanted.items() if v is None and params[k].default is inspect.Parameter.empty]
    if missing:
        raise ValueError(f"{target.__name__} needs {missing}, which this DistillationModule was not given")
    return factory(**wanted)


def _accuracy_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc_top1": MulticlassAccuracy(num_classes, average="micro"),
            "acc_mean_class": MulticlassAccuracy(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class DistillationModule(L.LightningModule):
    """Train ``student`` from ``teacher`` with the loss terms in ``distill``.

    Args:
        student: the student network's spec (``num_classes`` must be set).
        distill: term name -> loss factory (``functools.partial`` from Hydra's ``_partial_: true``) or
            an already-built loss. Factories whose constructor takes ``student_taps``/``teacher_taps``
            receive the probed shapes. ``{"ce": CrossEntropyLoss}`` alone trains without a teacher.
        optimizer: factory taking ``params=`` (a partial such as ``torch.optim.SGD(lr=0.1)``).
        teacher: the teacher's spec; required when a term needs it, ignored otherwise.
        scheduler: factory taking ``optimizer=``, or ``None``.
        scheduler_interval: ``"epoch"`` or ``"step"``.
        image_size: input size used to probe the feature shapes once at construction.
        channels_last: run both networks (and their inputs) in channels-last memory format.
        nonfinite: what a non-finite loss term does in training: ``"raise"`` (default: stop, naming
            the term, epoch and batch) or ``"skip"`` (skip that step's update; counted and logged as
            ``train/nonfinite_skips``). Non-finite weights always stop the run before a checkpoint.
        train_student: ``False`` freezes the student (no grad, eval mode, not in the optimizer), for
            stages that train only what the loss terms own (SRM's teacher dictionaries).
        num_samples: the training set's size, for losses whose constructor takes ``num_samples``
            (a memory bank with one entry per sample).
        teacher_cache: a teacher cache folder (``kdscene-cache``): no teacher is built, training steps
            replay the recorded views' logits and energy maps; terms that need the live teacher are
            refused. Training batches must carry their indices (``needs_indices`` is then true) and
            epoch ``e``'s views must be draw ``e mod K`` (``SceneDataModule(view_cycle=K)``).
        compile: ``torch.compile`` student and teacher in place (``True``: the inductor backend; a
            string names another backend, e.g. ``"aot_eager"``); the taps keep working.
        backbone_lr_scale: the student's backbone learns at this fraction of the optimizer's ``lr``;
            its classifier and the terms' own parameters at ``lr`` (1, the default: one group).
    """

    def __init__(
        self,
        student: BackboneSpec,
        distill: Mapping[str, LossFactory | nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        teacher: BackboneSpec | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        image_size: int = 224,
        channels_last: bool = False,
        nonfinite: Literal["raise", "skip"] = "raise",
        train_student: bool = True,
        num_samples: int | None = None,
        teacher_cache: str | None = None,
        compile: bool | str = False,
        backbone_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        if not distill:
            raise ValueError("distill is empty: give at least one loss term, e.g. {'ce': CrossEntropyLoss}")
        if nonfinite not in ("raise", "skip"):
            raise ValueError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}")
        self.student = build_backbone(student)
        self.student_tap = FeatureTap(self.student, student.tap_layers, student.tap_head)
        if not train_student:
            # eval now: Lightning restores the modes captured at fit start and never calls self.train()
            self.student.requires_grad_(False)
            self.student.eval()
        self.teacher: nn.Module | None = None
        self.teacher_tap: FeatureTap | None = None
        self._missing_teacher_file: str | None = None
        self.cached_teacher: TeacherCache | None = None
        needing = [k for k, f in distill.items() if _needs_teacher(f)]
        if needing and teacher_cache:
            check_cacheable(distill)
            self._open_cache(teacher_cache)
        elif needing:
            self._build_teacher(teacher, student, needing)
        student_taps = probe(self.student_tap, image_size)
        teacher_taps = probe(self.teacher_tap, image_size) if self.teacher_tap else self._cached_taps()
        context = {"num_samples": num_samples, "teacher_network": self.teacher}
        self.distill = nn.ModuleDict(
            {k: build_term(f, student_taps, teacher_taps, **context) for k, f in distill.items()}
        )
        if self.cached_teacher is not None:
            check_cacheable(self.distill)
        n = student.num_classes
        self.train_metrics = _accuracy_metrics(n, "train/")
        self.val_metrics = _accuracy_metrics(n, "val/")
        self.test_metrics = _accuracy_metrics(n, "test/")
        self.teacher_metrics = nn.ModuleDict(
            {split: _accuracy_metrics(n, f"teacher/{split}_") for split in ("val", "test")}
        )
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in checkpoints: a resumed run keeps its best
        self.nonfinite_skips = 0
        self.example_input_array = torch.zeros(1, 3, image_size, image_size)  # the model summary's FLOPs

    # -- construction -------------------------------------------------------------------------
    def _build_teacher(self, spec: BackboneSpec | None, student: BackboneSpec, needing: list[str]) -> None:
        if spec is None:
            raise ValueError(f"the distill terms {needing} need a teacher, but no teacher was given")
        if spec.num_classes != student.num_classes:
            raise ValueError(
                f"teacher {spec.label!r} has {spec.num_classes} classes but student {student.label!r} has "
                f"{student.num_classes}; both must predict the same classes"
            )
        if not (spec.checkpoint or spec.init or spec.weights):
            rank_zero_info(f"[kdscene] WARNING: teacher {spec.label!r} has no weights: it is random")
        built = dataclasses.replace(spec, checkpoint=None)  # the file is read below, if it is there
        self.teacher = build_backbone(built)
        if spec.checkpoint and Path(spec.checkpoint).expanduser().is_file():
            load_checkpoint(self.teacher, spec.checkpoint)
        elif spec.checkpoint:  # fitting needs it (setup raises); loading or evaluating a student does not
            self._missing_teacher_file = spec.checkpoint
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.teacher_tap = FeatureTap(self.teacher, built.tap_layers, built.tap_head)

    def _open_cache(self, path: str) -> None:
        """Open the teacher cache; a missing one fails fitting (in :meth:`setup`), not evaluation."""
        if not Path(path).expanduser().is_dir():
            self._missing_teacher_file = path
            return
        self.cached_teacher = TeacherCache(path)

    def _cached_taps(self) -> list[TapInfo]:
        return self.cached_teacher.taps if self.cached_teacher is not None else []

    def setup(self, stage: str) -> None:
        """Fitting needs the teacher's file; evaluation without it skips the teacher (and its terms)."""
        path = self._missing_teacher_file
        if not path:
            return
        what = "teacher cache" if self.hparams.teacher_cache else "teacher checkpoint"
        if stage == "fit":
            hint = (
                "; train the teacher first (kdscene-train distill=none student.name=<teacher>; the paper "
                "recipes: experiment=dct_paper_teacher)"
                if what == "teacher checkpoint"
                else "; record it with kdscene-cache"
            )
            raise FileNotFoundError(f"{what} {str(path)!r} does not exist{hint}")
        rank_zero_warn(f"{what} {path!r} not found: evaluating without the teacher")
        self.teacher, self.teacher_tap, self._missing_teacher_file = None, None, None

    @property
    def needs_indices(self) -> bool:
        """Whether training batches must carry the samples' indices (a term's ``needs_indices``, a cache)."""
        wanted = any(getattr(loss, "needs_indices", False) for loss in self.distill.values())
        return wanted or self.cached_teacher is not None

    def train(self, mode: bool = True) -> DistillationModule:
        """Switch the student and the terms to ``mode``; the teacher (and a frozen student) stay in eval."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        if not self.hparams.train_student:
            self.student.eval()
        return self

    def configure_model(self) -> None:
        """Channels-last memory format and ``torch.compile`` of both networks, as configured (idempotent)."""
        networks = [net for net in (self.student, self.teacher) if net is not None]
        if self.hparams.channels_last:
            for net in networks:
                net.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            backend = "inductor" if self.hparams.compile is True else str(self.hparams.compile)
            device = self._trainer.strategy.root_device.type if self._trainer else "cpu"
            for net in networks:
                compile_network(net, backend, device)

    # -- the step ---------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        """Student logits."""
        return self.student(images)

    def features(self, images: Tensor) -> tuple[Features, Features | None]:
        """Student features (with grad) and teacher features (without), for one batch."""
        teacher = None
        if self.teacher_tap is not None:
            with torch.no_grad():
                teacher = self.teacher_tap(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.hparams.train_student):
            student = self.student_tap(images)
        return student, teacher

    def loss_terms(self, student: Features, teacher: Features | None, labels: Tensor) -> dict[str, Tensor]:
        """Every weighted term, named ``<config key>`` or ``<config key>_<sub-term>``."""
        terms: dict[str, Tensor] = {}
        for key, loss in self.distill.items():
            if teacher is None and _needs_teacher(loss):
                continue  # only in evaluation without the teacher's file (see setup)
            out = loss(student, teacher, labels)
            for sub, value in out.items():
                terms[key if len(out) == 1 else f"{key}_{sub}"] = value
        return terms

    def _shared_step(
        self, batch: Sequence[Tensor], split: str, metrics: MetricCollection, batch_idx: int = 0
    ) -> Tensor | None:
        images, labels = batch[0], batch[1]
        if labels.numel() == 0:  # every image of the batch was corrupt and dropped (data.skip_corrupt)
            return self._no_update() if split == "train" else None
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        student, teacher = self.features(images)
        if self.cached_teacher is not None and split == "train":
            teacher = self._replayed_teacher(batch)
        if len(batch) > 2:  # (images, labels, indices): the data module returns indices for a loss
            student = dataclasses.replace(student, indices=batch[2])
            teacher = dataclasses.replace(teacher, indices=batch[2]) if teacher is not None else None
        terms = self.loss_terms(student, teacher, labels)
        if split == "train" and self._skip_nonfinite(terms, batch_idx):
            return self._no_update()
        loss = torch.stack([v.float() for v in terms.values()]).sum()
        bs = images.shape[0]
        self.log(
            f"{split}/loss",
            loss,
            on_step=split == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=bs,
            sync_dist=split != "train",
        )
        for name, value in terms.items():
            self.log(
                f"{split}/loss_{name}",
                value,
                on_step=False,
                on_epoch=True,
                batch_size=bs,
                sync_dist=split != "train",
            )
        metrics.update(student.logits.detach(), labels)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=split != "train", batch_size=bs)
        if teacher is not None and split in self.teacher_metrics:
            # the teacher's accuracy from the logits this step computed anyway (synced across ranks)
            self.teacher_metrics[split].update(teacher.logits, labels)
            self.log_dict(self.teacher_metrics[split], on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def _replayed_teacher(self, batch: Sequence[Tensor]) -> Features:
        """The cached teacher outputs of this batch's views: draw ``epoch mod K`` of its samples."""
        if len(batch) < 3:
            raise RuntimeError(
                "teacher_cache: training batches carry no sample indices; the data module must return "
                "them (SceneDataModule(return_index=True, view_cycle=K); kdscene-train sets both)"
            )
        draw = self.current_epoch % self.cached_teacher.views
        return self.cached_teacher.features(draw, batch[2], self.device)

    def _skip_nonfinite(self, terms: dict[str, Tensor], batch_idx: int) -> bool:
        """Raise on a non-finite term (``nonfinite="raise"``), or count it and skip the step."""
        if self.hparams.nonfinite == "raise":
            check_terms(terms, self.current_epoch, batch_idx)
            return False
        if not nonfinite_terms(terms):
            return False
        self.nonfinite_skips += 1
        self.log("train/nonfinite_skips", float(self.nonfinite_skips), on_step=False, on_epoch=True)
        return True

    def _no_update(self) -> Tensor | None:
        """Skip this step: ``None`` on one device; under DDP, where a rank that skips alone would leave
        the others waiting in the gradient all-reduce, a zero loss (zero gradients) instead."""
        if self.trainer.world_size == 1:
            return None
        return torch.stack([p.sum() for p in self.trainable_parameters()]).sum() * 0.0

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor | None:
        return self._shared_step(batch, "train", self.train_metrics, batch_idx)

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val", self.val_metrics)

    def test_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test", self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_metrics["acc_top1"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def on_train_start(self) -> None:
        if self.trainer.ckpt_path is None:  # a resumed run keeps the best it restored
            self.val_acc_best.reset()

    # -- checkpoints and optimizers -----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse non-finite weights; drop the teacher's (its spec is in the hyper-parameters)."""
        state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}
        weights = ((k, v) for k, v in state.items() if k.startswith(("student.", "distill.")))
        check_weights(weights, checkpoint.get("epoch", self.current_epoch))
        checkpoint["state_dict"] = state
        if self.cached_teacher is not None:  # a resumed run must replay the same cache
            checkpoint["teacher_cache"] = self.cached_teacher.header_text

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the (rebuilt) teacher's weights back so that the checkpoint loads strictly."""
        if self.teacher is not None:
            teacher_state = {f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}
            checkpoint["state_dict"] = {**checkpoint["state_dict"], **teacher_state}
        recorded = checkpoint.get("teacher_cache")
        if self.cached_teacher is not None and recorded and recorded != self.cached_teacher.header_text:
            path = str(self.cached_teacher.path)
            raise CacheMismatchError(f"this checkpoint was trained from another teacher cache than {path!r}")

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The student's parameters and those owned by the loss terms."""
        params = list(self.student.parameters()) + list(self.distill.parameters())
        return [p for p in params if p.requires_grad]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return configure(
            hp.optimizer,
            parameter_groups(
                self.student,
                self.student_tap.head,
                list(self.distill.parameters()),
                hp.optimizer,
                hp.backbone_lr_scale,
            ),
            hp.scheduler,
            hp.scheduler_interval,
            lambda: int(self.trainer.estimated_stepping_batches),
        )
