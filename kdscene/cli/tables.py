"""Finished runs as the papers' tables: rows (methods) x columns (teacher -> student pairs).

Each cell aggregates the runs of one row and column (their seeds): mean ± sample standard deviation
and the number of runs, of top-1 and mean-class accuracy at the best and at the last validation epoch,
beside the published number of the recipe's ``paper`` node. Runs of one table whose overrides differ in
more than the row, the column and the seed (say, a swept loss weight) get rows of their own, labelled
with what differs; those rows have no published number. The teacher's accuracy, measured by every
distillation run, is a row of its own. Plain Python, no pandas.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kdscene.cli.results import RunRecord

_TEACHER_VALUES = {
    "top1_best": "teacher_top1",
    "top1_last": "teacher_top1",
    "mean_class_best": "teacher_mean_class",
    "mean_class_last": "teacher_mean_class",
}
_NOT_VARIANTS = {"seed", "experiment"}


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (``None`` for a single value) and count, in percent."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, fractions: Iterable[float | None]) -> Stat:
        """The statistics of the given fractions as percentages, ``None`` values left out."""
        values = [100.0 * v for v in fractions if v is not None]
        if not values:
            return cls(None, None, 0)
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))

    def text(self, count: bool = True, sign: bool = False) -> str:
        """``52.00 ± 2.00 (3)``; ``52.00 (1)`` for one run; ``–`` for none.

        Args:
            count: append the number of runs in brackets.
            sign: write the mean with its sign (``+3.10``), for differences.
        """
        if self.mean is None:
            return "–"
        spread = f" ± {self.std:.2f}" if self.std is not None else ""
        mean = f"{self.mean:+.2f}" if sign else f"{self.mean:.2f}"
        return f"{mean}{spread}" + (f" ({self.n})" if count else "")


@dataclass(frozen=True)
class Cell:
    """The runs of one row and column, and the published numbers for them (``{"top1": 54.25}``).

    Args:
        runs: the runs (one per seed, usually).
        published: the recipe's published numbers for this row and column, by metric.
        teacher: the teacher's row: its values are the runs' ``teacher/val_acc_*``.
    """

    runs: tuple[RunRecord, ...]
    published: Mapping[str, float]
    teacher: bool = False

    def stat(self, value: str) -> Stat:
        """Statistics of one of :data:`~kdscene.cli.results.VALUES` over the cell's runs."""
        name = _TEACHER_VALUES[value] if self.teacher else value
        return Stat.of(run.value(name) for run in self.runs)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds of the cell's runs, sorted."""
        return tuple(sorted(run.seed for run in self.runs if run.seed is not None))


@dataclass(frozen=True)
class Row:
    """A table row: the run's row key (a ``distill`` choice), what else its runs override, its label."""

    key: str
    variant: str
    label: str


@dataclass(frozen=True)
class Table:
    """One table in the papers' layout.

    Args:
        title: ``paper.table`` (or the runs' ``task_name``).
        data: the data set, when the layout does not vary it (``""`` otherwise).
        paper: the recipe's ``paper`` node.
        rows: the method rows in display order.
        columns: ``(key, label)`` of the columns in display order.
        cells: the filled cells by ``(row, column key)``.
        teacher: the teacher's accuracy by column key (empty when the runs had no teacher).
    """

    title: str
    data: str
    paper: Mapping[str, Any]
    rows: tuple[Row, ...]
    columns: tuple[tuple[str, str], ...]
    cells: Mapping[tuple[Row, str], Cell]
    teacher: Mapping[str, Cell]

    @property
    def heading(self) -> str:
        """The title, with the data set when the title does not name it already."""
        simple = re.sub(r"[^a-z0-9]", "", self.title.lower())
        if self.data in ("", "-") or re.sub(r"[^a-z0-9]", "", self.data.lower()) in simple:
            return self.title
        return f"{self.title} ({self.data})"

    @property
    def slug(self) -> str:
        """A file-name stem for the table's pictures."""
        return re.sub(r"[^A-Za-z0-9]+", "_", self.heading).strip("_").lower() or "table"

    @property
    def runs(self) -> list[RunRecord]:
        """Every run of the table."""
        return [run for cell in self.cells.values() for run in cell.runs]

    def lines(self) -> list[tuple[Row, Mapping[str, Cell]]]:
        """The rows to show, the teacher's first (key ``teacher``), each with its cells by column key."""
        out: list[tuple[Row, Mapping[str, Cell]]] = []
        if self.teacher:
            label = str((self.paper.get("teacher") or {}).get("label") or "Teacher")
            out.append((Row("teacher", "", label), self.teacher))
        for row in self.rows:
            out.append((row, {c: cell for (r, c), cell in self.cells.items() if r == row}))
        return out


def _override_map(run: RunRecord) -> dict[str, str]:
    """The run's overrides that could tell two of a table's runs apart (not its row, column, seed)."""
    skip = _NOT_VARIANTS | set(run.layout.values()) | run.ignored_keys
    pairs = (o.split("=", 1) for o in run.overrides if "=" in o)
    found = {k.lstrip("+~"): v for k, v in pairs}
    return {k: v for k, v in found.items() if k not in skip and not k.startswith("hydra.")}


def variants(runs: Sequence[RunRecord]) -> list[str]:
    """Per run, ``key=value,...`` of its overrides whose value is not the same in all ``runs``."""
    maps = [_override_map(r) for r in runs]
    keys = sorted({k for m in maps for k in m if len({m2.get(k) for m2 in maps}) > 1})
    return [",".join(f"{k}={m[k]}" for k in keys if k in m) for m in maps]


def _ordered(keys: Iterable[Any], preferred: Iterable[Any]) -> list[Any]:
    """``keys`` without repeats: those in ``preferred`` first in its order, then the rest sorted."""
    present = list(dict.fromkeys(keys))
    first = [k for k in dict.fromkeys(preferred) if k in present]
    return first + sorted((k for k in present if k not in first), key=str)


def _published(node: Any, column: str) -> dict[str, float]:
    """``{"top1": x, "mean_class": y}`` from a ``paper.rows.<row>`` node, for one column."""
    node = node if isinstance(node, Mapping) else {}
    found = {m: (node.get(m) or {}).get(column) for m in ("top1", "mean_class")}
    return {m: float(v) for m, v in found.items() if isinstance(v, int | float)}


def _row(paper_rows: Mapping[str, Any], key: str, variant: str) -> Row:
    """The row of ``key`` (and its variant), labelled as ``paper.rows.<key>.label`` says."""
    label = str((paper_rows.get(key) or {}).get("label") or key)
    return Row(key, variant, f"{label} [{variant}]" if variant else label)


def _teacher(runs: Sequence[RunRecord], columns: Sequence[str], paper: Mapping[str, Any]) -> dict[str, Cell]:
    """Per column, the runs that measured their teacher (``teacher/val_acc_*``) and its published number."""
    node = paper.get("teacher") or {}
    measured = [r for r in runs if r.value("teacher_top1") is not None]
    cells = {c: tuple(r for r in measured if r.column == c) for c in columns}
    return {c: Cell(rs, _published(node, c), teacher=True) for c, rs in cells.items() if rs}


def _table(title: str, data: str, runs: list[RunRecord]) -> Table:
    paper = runs[0].paper
    paper_rows = paper.get("rows") or {}
    groups: dict[tuple[Row, str], list[RunRecord]] = {}
    for run, variant in zip(runs, variants(runs)):
        groups.setdefault((_row(paper_rows, run.row, variant), run.column), []).append(run)
    rows = _ordered((row for row, _ in groups), (_row(paper_rows, k, "") for k in paper_rows))
    columns = _ordered((c for _, c in groups), paper.get("columns") or {})
    cells = {
        (row, c): Cell(tuple(rs), {} if row.variant else _published(paper_rows.get(row.key), c))
        for (row, c), rs in groups.items()
    }
    labels = paper.get("columns") or {}
    return Table(
        title=title,
        data=data,
        paper=paper,
        rows=tuple(rows),
        columns=tuple((c, str(labels.get(c, c))) for c in columns),
        cells=cells,
        teacher=_teacher(runs, columns, paper),
    )


def build_tables(records: Sequence[RunRecord]) -> list[Table]:
    """Group runs into tables: by title, and by data set unless the layout spreads data sets."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for run in records:
        data = "" if "data" in run.layout.values() else run.data
        groups.setdefault((run.table, data), []).append(run)
    return [_table(title, data, runs) for (title, data), runs in groups.items()]
