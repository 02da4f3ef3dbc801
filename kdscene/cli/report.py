"""Write tables of :mod:`kdscene.cli.tables` as Markdown and CSV (percentages, two decimals in Markdown)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from kdscene.cli.results import VALUES, RunRecord
from kdscene.cli.tables import Cell, Row, Stat, Table

_METRICS = (("top1", "Top-1"), ("mean_class", "Mean-class accuracy"))


def _cells(cell: Cell | None, metric: str, show_paper: bool) -> list[str]:
    """A cell's best, last (and published) values as Markdown table entries; empty for no runs."""
    if cell is None:
        return [""] * (3 if show_paper else 2)
    out = [cell.stat(f"{metric}_best").text(), cell.stat(f"{metric}_last").text()]
    if show_paper:
        value = cell.published.get(metric)
        out.append("" if value is None else f"{value:.2f}")
    return out


def _block(table: Table, metric: str, title: str) -> list[str]:
    """One Markdown table of ``metric``: per column its best and last epoch (and the paper's number)."""
    lines = table.lines()
    show_paper = any(metric in cell.published for _, cells in lines for cell in cells.values())
    sub = ("best", "last", "paper") if show_paper else ("best", "last")
    head = ["Method"] + [f"{label} {s}" if s == "best" else s for _, label in table.columns for s in sub]
    out = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for row, cells in lines:
        values = [v for column, _ in table.columns for v in _cells(cells.get(column), metric, show_paper)]
        out.append("| " + " | ".join([row.label, *values]) + " |")
    return out


def table_markdown(table: Table) -> str:
    """One table: heading, where the recipe and numbers come from, the top-1 and mean-class blocks."""
    runs = table.runs
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    lines = [f"## {table.heading}", ""]
    if table.paper.get("title"):
        lines.append(f"Recipe: {table.paper['title']}. Published numbers: {table.paper.get('source', '–')}.")
    rule = table.paper.get("selection")
    lines.append(
        f"{len(runs)} runs; seeds {', '.join(map(str, seeds)) or '–'}"
        + (f"; the paper reports the {rule} validation epoch." if rule else ".")
    )
    lines += [
        "",
        "Accuracy (%) on the validation split: mean ± standard deviation over a cell's runs (their number in"
        " brackets). *best*: the epoch with the highest validation top-1; *last*: the final epoch;"
        " *paper*: the published number.",
        "",
    ]
    for metric, title in _METRICS:
        lines += [*_block(table, metric, title), ""]
    return "\n".join(lines)


def markdown(tables: Sequence[Table], skipped: Sequence[tuple[Path, str]], source: str) -> str:
    """The report: every table, then the folders that were skipped and why."""
    parts = [f"# Results: {source}", ""] + [table_markdown(t) for t in tables]
    if skipped:
        parts += ["## Skipped folders", ""] + [f"- `{folder}`: {why}" for folder, why in skipped] + [""]
    return "\n".join(parts)


SUMMARY_FIELDS = (
    "table",
    "data",
    "row",
    "variant",
    "row_label",
    "column",
    "column_label",
    "n",
    "seeds",
    *(f"{v}_{s}" for v in VALUES for s in ("mean", "std")),
    "published_top1",
    "published_mean_class",
    "top1_best_minus_published",
)
RUN_FIELDS = (
    "table",
    "data",
    "row",
    "column",
    "seed",
    "best_epoch",
    "epochs",
    *VALUES,
    "teacher_top1",
    "folder",
)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _summary(table: Table, row: Row, column: tuple[str, str], cell: Cell) -> dict:
    stats: dict[str, Stat] = {v: cell.stat(v) for v in VALUES}
    best, paper = stats["top1_best"].mean, cell.published.get("top1")
    return {
        "table": table.heading,
        "data": table.data,
        "row": row.key,
        "variant": row.variant,
        "row_label": row.label,
        "column": column[0],
        "column_label": column[1],
        "n": stats["top1_best"].n,
        "seeds": " ".join(map(str, cell.seeds)),
        **{f"{v}_mean": _num(s.mean) for v, s in stats.items()},
        **{f"{v}_std": _num(s.std) for v, s in stats.items()},
        "published_top1": _num(paper),
        "published_mean_class": _num(cell.published.get("mean_class")),
        "top1_best_minus_published": _num(None if best is None or paper is None else best - paper),
    }


def summary_rows(tables: Sequence[Table]) -> list[dict]:
    """One record per filled cell (the teacher's as row ``teacher``), in display order."""
    return [
        _summary(table, row, column, cells[column[0]])
        for table in tables
        for row, cells in table.lines()
        for column in table.columns
        if column[0] in cells
    ]


def _percent(run: RunRecord, name: str) -> str:
    value = run.value(name)
    return _num(None if value is None else 100.0 * value)


def run_rows(records: Sequence[RunRecord]) -> list[dict]:
    """One record per run, to check each number of the summary."""
    return [
        {
            "table": run.table,
            "data": run.data,
            "row": run.row,
            "column": run.column,
            "seed": "" if run.seed is None else run.seed,
            "best_epoch": "" if run.best is None else run.best.epoch,
            "epochs": len(run.curve),
            **{v: _percent(run, v) for v in VALUES},
            "teacher_top1": _percent(run, "teacher_top1"),
            "folder": str(run.folder),
        }
        for run in records
    ]


def write_csv(path: Path, fields: Sequence[str], rows: Sequence[Mapping]) -> None:
    """Write ``rows`` (dicts keyed by ``fields``) to ``path`` as CSV."""
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
