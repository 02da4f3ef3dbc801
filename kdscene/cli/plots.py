"""Pictures of the tables of :mod:`kdscene.cli.tables`, drawn with matplotlib when it is installed.

Per table: ``<table>_bars.png``, best-epoch top-1 per method (one bar per teacher/student column, the
standard deviation over seeds as error bar, the published number as a black mark); and
``<table>_curves.png``, validation top-1 per epoch (one panel per column, one line per method: the mean
over seeds, shaded ± one standard deviation). matplotlib is imported only here, without pyplot (no
display, no global backend change); ``pip install matplotlib`` (or the ``notebook``/``dev`` extras).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdscene.cli.results import RunRecord
from kdscene.cli.tables import Cell, Table

MISSING_NOTE = "kdscene-collect: plots skipped (matplotlib is not installed: pip install matplotlib)"


def matplotlib_figure() -> Any | None:
    """matplotlib's ``Figure`` class, or ``None`` when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def _published_marks(xs: Sequence[float], cells: Sequence[Cell | None]) -> list[tuple[float, float]]:
    """(x, published top-1) of the cells that have a published number."""
    return [(x, c.published["top1"]) for x, c in zip(xs, cells) if c is not None and "top1" in c.published]


def _bars(figure_cls: Any, table: Table, path: Path) -> Path:
    lines = table.lines()
    width = 0.8 / max(1, len(table.columns))
    fig = figure_cls(figsize=(max(6.0, 0.5 * len(lines) * max(1, len(table.columns))), 4.0))
    ax = fig.add_subplot()
    for j, (column, label) in enumerate(table.columns):
        x = [i + (j - (len(table.columns) - 1) / 2) * width for i in range(len(lines))]
        stats = [cells[column].stat("top1_best") if column in cells else None for _, cells in lines]
        heights = [s.mean if s and s.mean is not None else 0.0 for s in stats]
        errors = [s.std if s and s.std is not None else 0.0 for s in stats]
        ax.bar(x, heights, width, yerr=errors, capsize=2, label=label)
        marks = _published_marks(x, [cells.get(column) for _, cells in lines])
        if marks:
            ax.scatter(
                *zip(*marks), marker="_", s=120, color="black", zorder=3, label="paper" if j == 0 else None
            )
    ax.set_xticks(range(len(lines)), [row.label for row, _ in lines], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("top-1 (%), best epoch")
    ax.set_title(table.heading)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _mean_curve(runs: Sequence[RunRecord]) -> tuple[list[int], list[float], list[float]]:
    """Epochs, mean and standard deviation (0 for one run) of the runs' validation top-1 (%)."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for point in run.curve:
            by_epoch.setdefault(point.epoch, []).append(100.0 * point.top1)
    epochs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[e]) for e in epochs]
    stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
    return epochs, means, stds


def _curves(figure_cls: Any, table: Table, path: Path) -> Path:
    n = max(1, len(table.columns))
    fig = figure_cls(figsize=(4.5 * n, 3.5))
    for j, (column, label) in enumerate(table.columns):
        ax = fig.add_subplot(1, n, j + 1)
        for row in table.rows:
            cell = table.cells.get((row, column))
            epochs, means, stds = _mean_curve(cell.runs if cell else ())
            if not epochs:
                continue
            (line,) = ax.plot(epochs, means, label=row.label, linewidth=1)
            low, high = [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)]
            ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val top-1 (%)")
        ax.legend(fontsize=6)
    fig.suptitle(table.heading)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_tables(tables: Sequence[Table], out: Path) -> list[Path] | None:
    """Write each table's two pictures into ``out``; ``None`` when matplotlib is missing."""
    figure_cls = matplotlib_figure()
    if figure_cls is None:
        return None
    paths = []
    for table in tables:
        paths.append(_bars(figure_cls, table, out / f"{table.slug}_bars.png"))
        paths.append(_curves(figure_cls, table, out / f"{table.slug}_curves.png"))
    return paths
