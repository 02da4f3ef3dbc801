"""Read finished runs back from their folders: which table cell each one is, and how it did.

A run folder is one Hydra job (``kdscene-train``, alone or in a sweep). It holds:

- ``.hydra/config.yaml``: the composed config; a paper recipe's ``paper`` node names its table, the
  layout of its rows and columns and the published numbers (``paper.rows.<row>.top1.<column>``);
- ``.hydra/hydra.yaml``: the config-group choices (``distill``, ``pair``, ``data``) and the override
  keys that do not name a job (``hydra.job.config.override_dirname.exclude_keys``);
- ``.hydra/overrides.yaml``: the job's command-line overrides;
- ``result.json``, written when a fit finishes (``metrics``, checkpoints, ``stages``, ``max_epochs``);
  a multi-stage job's numbers are its final stage's (``<run>/<stage>/result.json``);
- ``csv/metrics.csv``: the per-epoch validation curve (``val/acc_top1``, ``val/acc_mean_class``).

The best epoch is the first with the highest validation top-1, as the best-checkpoint callback keeps
it; without a curve, ``val/acc_best`` and the final ``val/acc_*`` of ``result.json`` are used. Only the
standard library and PyYAML are imported (no torch), so that reading a sweep is instant.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RESULT_FILE = "result.json"  # kdscene.cli.fit.RESULT_FILE (not imported: fit imports torch)
CURVE_FILE = Path("csv") / "metrics.csv"
DEFAULT_LAYOUT = {"rows": "distill", "columns": "pair"}


class UnfinishedRun(Exception):
    """A run folder without the results of a finished fit; the message says what is missing."""


@dataclass(frozen=True)
class Epoch:
    """The validation accuracies (fractions) logged at the end of one epoch."""

    epoch: int
    top1: float
    mean_class: float | None


@dataclass(frozen=True)
class RunRecord:
    """One finished run, placed in its table.

    Args:
        folder: the run's folder.
        table: the table's title (``paper.table``, else the run's ``task_name``).
        data: the data config it ran on (``data`` choice).
        row: the run's row key (by default its ``distill`` choice).
        column: the run's column key (by default its ``pair`` choice, else ``teacher->student``).
        seed: the run's seed.
        overrides: its command-line overrides (``key=value``).
        ignored_keys: override keys that do not tell jobs apart (machine paths, display switches).
        layout: the config keys that gave ``row`` and ``column``.
        paper: the recipe's ``paper`` node (empty without one).
        metrics: the final metrics of its (last stage's) ``result.json``.
        curve: the per-epoch validation accuracies, in epoch order (empty without ``metrics.csv``).
    """

    folder: Path
    table: str
    data: str
    row: str
    column: str
    seed: int | None
    overrides: tuple[str, ...]
    ignored_keys: frozenset[str]
    layout: Mapping[str, str]
    paper: Mapping[str, Any]
    metrics: Mapping[str, float]
    curve: tuple[Epoch, ...] = field(default=())

    @property
    def best(self) -> Epoch | None:
        """The first epoch with the highest validation top-1 (``None`` without a curve)."""
        return max(self.curve, key=lambda e: e.top1, default=None)

    @property
    def last(self) -> Epoch | None:
        """The final validated epoch (``None`` without a curve)."""
        return self.curve[-1] if self.curve else None

    def value(self, name: str) -> float | None:
        """One of :data:`VALUES` as a fraction (``None`` when the run did not log it)."""
        best, last, m = self.best, self.last, self.metrics
        values = {
            "top1_best": best.top1 if best else m.get("val/acc_best"),
            "top1_last": last.top1 if last else m.get("val/acc_top1"),
            "mean_class_best": best.mean_class if best else None,
            "mean_class_last": last.mean_class if last else m.get("val/acc_mean_class"),
            "teacher_top1": m.get("teacher/val_acc_top1"),
            "teacher_mean_class": m.get("teacher/val_acc_mean_class"),
        }
        if name not in values:
            raise KeyError(f"unknown run value {name!r}; known: {sorted(values)}")
        return values[name]


VALUES = ("top1_best", "top1_last", "mean_class_best", "mean_class_last")


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _select(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _pair(config: Mapping[str, Any], choices: Mapping[str, Any]) -> str:
    """The ``pair`` choice, else ``<teacher>-><student>`` (or the student's name alone)."""
    if choices.get("pair"):
        return str(choices["pair"])
    teacher, student = _select(config, "teacher.name"), _select(config, "student.name")
    return f"{teacher}->{student}" if teacher else str(student)


def dimension(name: str, config: Mapping[str, Any], choices: Mapping[str, Any]) -> str:
    """The value of a layout key for one run: a config-group choice or a dotted config path."""
    if name == "pair":
        return _pair(config, choices)
    value = choices[name] if name in choices else _select(config, name)
    return "-" if value is None else str(value)


def _final_result(folder: Path, config: Mapping[str, Any]) -> tuple[dict, Path]:
    """The final stage's ``result.json`` record and the folder it lives in."""
    path = folder / RESULT_FILE
    if path.is_file():
        record = json.loads(path.read_text())
        stages = record.get("stages") or {}
        if not stages:
            return record, folder
        name, final = list(stages.items())[-1]
        return final, folder / name
    stages = list(_select(config, "distill.stages") or {})
    if not stages:
        raise UnfinishedRun(f"no {RESULT_FILE} (not finished, or a fast_dev_run)")
    path = folder / stages[-1] / RESULT_FILE
    if not path.is_file():
        raise UnfinishedRun(f"its final stage {stages[-1]!r} has no {RESULT_FILE}")
    return json.loads(path.read_text()), path.parent


def read_curve(path: Path) -> tuple[Epoch, ...]:
    """The validation accuracies per epoch of a Lightning ``metrics.csv`` (the last row of an epoch)."""
    if not path.is_file():
        return ()
    epochs: dict[int, Epoch] = {}
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            top1, epoch = row.get("val/acc_top1", ""), row.get("epoch", "")
            if top1 and epoch:
                mean_class = row.get("val/acc_mean_class", "")
                epochs[int(float(epoch))] = Epoch(
                    int(float(epoch)), float(top1), float(mean_class) if mean_class else None
                )
    return tuple(epochs[e] for e in sorted(epochs))


def _seed(config: Mapping[str, Any]) -> int | None:
    try:
        return int(config.get("seed"))
    except (TypeError, ValueError):  # absent, or an interpolation the run resolved itself
        return None


def read_run(folder: Path) -> RunRecord:
    """The :class:`RunRecord` of one run folder; raise :class:`UnfinishedRun` when it has no results."""
    config = _load_yaml(folder / ".hydra" / "config.yaml") or {}
    hydra = (_load_yaml(folder / ".hydra" / "hydra.yaml") or {}).get("hydra", {})
    choices = _select(hydra, "runtime.choices") or {}
    result, final = _final_result(folder, config)
    paper = config.get("paper") or {}
    layout = {**DEFAULT_LAYOUT, **(paper.get("layout") or {})}
    return RunRecord(
        folder=folder,
        table=str(paper.get("table") or config.get("task_name") or folder.parent.name),
        data=str(choices.get("data") or "-"),
        row=dimension(layout["rows"], config, choices),
        column=dimension(layout["columns"], config, choices),
        seed=_seed(config),
        overrides=tuple(str(o) for o in _load_yaml(folder / ".hydra" / "overrides.yaml") or ()),
        ignored_keys=frozenset(_select(hydra, "job.config.override_dirname.exclude_keys") or ()),
        layout=layout,
        paper=paper,
        metrics={k: float(v) for k, v in (result.get("metrics") or {}).items()},
        curve=read_curve(final / CURVE_FILE),
    )


def find_runs(root: Path) -> list[Path]:
    """Every run folder (one holding ``.hydra/config.yaml``) at or under ``root``, sorted."""
    if (root / ".hydra" / "config.yaml").is_file():
        return [root]
    return sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml"))


def read_runs(roots: Sequence[Path] | Iterable[Path]) -> tuple[list[RunRecord], list[tuple[Path, str]]]:
    """The finished runs under ``roots`` and the skipped folders, each with the reason."""
    records, skipped = [], []
    for root in roots:
        for folder in find_runs(Path(root)):
            try:
                records.append(read_run(folder))
            except UnfinishedRun as err:
                skipped.append((folder, str(err)))
    return records, skipped
