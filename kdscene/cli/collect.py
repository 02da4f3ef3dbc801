"""``kdscene-collect``: the results table of a sweep (or of any folder of runs), in the papers' layout.

    kdscene-collect logs/dct_paper_ade20k/multiruns/2026-12-01_10-00-00 [more folders] [--out DIR]

reads every finished run under the folders (:mod:`kdscene.cli.results`), groups them into tables
(:mod:`kdscene.cli.tables`: methods x teacher/student pairs, mean ± std over seeds, best and last
epoch, top-1 and mean-class, the recipe's published number beside each row that has one) and writes
into ``--out`` (default: the first folder):

- ``results.md``: the tables in Markdown (also printed);
- ``results.csv``: one line per table cell; ``runs.csv``: one line per run;
- ``<table>_bars.png`` and ``<table>_curves.png`` when matplotlib is installed (else a one-line note).

Unfinished runs (no ``result.json``) are listed at the end of ``results.md`` and left out of the
numbers. Torch and Lightning are never imported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kdscene.cli import plots, report
from kdscene.cli.results import read_runs
from kdscene.cli.tables import build_tables


@dataclass(frozen=True)
class Collected:
    """What :func:`collect` wrote: the Markdown text and every file's path (``plots`` empty if none)."""

    markdown: str
    files: tuple[Path, ...]
    plots: tuple[Path, ...]
    runs: int
    skipped: int


def collect(folders: Sequence[str | Path], out: str | Path | None = None, draw: bool = True) -> Collected:
    """Read the runs under ``folders`` and write ``results.md``, ``results.csv``, ``runs.csv``, plots.

    Args:
        folders: sweep folders, run folders or any folders above them.
        out: where to write (created); default: the first folder.
        draw: draw the PNG plots when matplotlib is installed.

    Returns:
        The Markdown report and the paths written.
    """
    roots = [Path(f) for f in folders]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise FileNotFoundError(f"kdscene-collect: no such folder: {', '.join(missing)}")
    records, skipped = read_runs(roots)
    target = Path(out) if out is not None else roots[0]
    target.mkdir(parents=True, exist_ok=True)
    tables = build_tables(records)
    text = report.markdown(tables, skipped, ", ".join(map(str, roots)))
    files = (target / "results.md", target / "results.csv", target / "runs.csv")
    files[0].write_text(text)
    report.write_csv(files[1], report.SUMMARY_FIELDS, report.summary_rows(tables))
    report.write_csv(files[2], report.RUN_FIELDS, report.run_rows(records))
    drawn = plots.plot_tables(tables, target) if draw and tables else []
    if drawn is None:
        print(plots.MISSING_NOTE, file=sys.stderr)
    return Collected(text, files, tuple(drawn or ()), len(records), len(skipped))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of ``kdscene-collect``."""
    parser = argparse.ArgumentParser(
        prog="kdscene-collect",
        description=__doc__.split("\n\n")[0],
        epilog="Writes results.md, results.csv, runs.csv and PNG plots; see kdscene/cli/collect.py.",
    )
    parser.add_argument("folders", nargs="+", help="sweep or run folders (searched recursively for runs)")
    parser.add_argument("--out", default=None, help="output folder (default: the first folder)")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; exit status 1 when no finished run was found."""
    args = parse_args(argv)
    try:
        result = collect(args.folders, args.out, draw=not args.no_plots)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    print(result.markdown)
    where = result.files[0].parent
    print(f"kdscene-collect: {result.runs} runs ({result.skipped} unfinished, skipped); written to {where}")
    if not result.runs:
        print("kdscene-collect: no finished run (result.json) found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
