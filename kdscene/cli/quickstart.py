"""``kdscene-quickstart``: the main job on the built-in synthetic scenes, in one process.

It generates the synthetic scene data set (cached under ``data/``), trains a teacher with
cross-entropy, distils a student from it with each requested method, tests every network on the
held-out split and prints a table of top-1 and mean-class accuracy. Every run keeps its logs and
checkpoints under ``--out``. Extra arguments are Hydra overrides applied to every run
(e.g. ``trainer.max_epochs=3``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from kdscene.cli.config import compose_config
from kdscene.cli.train import train

# the rows of the table, in order (any conf/distill name works with --methods)
DEFAULT_METHODS = ("none", "kd", "at", "at_kd", "dct", "dct_kd", "srm", "review", "fam")
LABELS = {
    "none": "Student alone",
    "kd": "KD",
    "at": "AT",
    "at_kd": "AT + KD",
    "dct": "DCT",
    "dct_kd": "DCT + KD",
    "srm": "SRM",
    "fam": "FAM-KD",
    "review": "ReviewKD",
    "review_kd": "ReviewKD + KD",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated conf/distill names (default: %(default)s)",
    )
    parser.add_argument("--teacher", default="resnet18", help="teacher backbone (default: %(default)s)")
    parser.add_argument("--student", default="resnet10", help="student backbone (default: %(default)s)")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--student-epochs", type=int, default=5)
    parser.add_argument("--out", default=None, help="output folder (default: logs/quickstart/<time>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    return parser.parse_args(argv)


def _job(name: str, overrides: list[str], out: Path) -> tuple[dict[str, float], str, float]:
    start = time.perf_counter()
    cfg = compose_config("train", [*overrides, f"task_name=quickstart_{name}"], out / name)
    result = train(cfg)
    return result.metrics, result.best_checkpoint, time.perf_counter() - start


def _row(label: str, metrics: dict[str, float], seconds: float) -> str:
    top1, mean_class = (
        metrics.get("test/acc_top1", float("nan")),
        metrics.get("test/acc_mean_class", float("nan")),
    )
    return f"| {label:<32} | {100 * top1:6.2f} | {100 * mean_class:10.2f} | {seconds:6.0f} |"


def run_quickstart(argv: Sequence[str] | None = None) -> list[dict]:
    """Run the teacher and every method; return one record per run (also written to results.json)."""
    args = parse_args(argv)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    out = Path(args.out or f"logs/quickstart/{datetime.now():%Y-%m-%d_%H-%M-%S}").resolve()
    common = [
        "data=synthetic",
        "logger=csv",
        "optimizer=adamw",
        "scheduler=onecycle",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        *args.overrides,
    ]
    teacher_overrides = [
        *common,
        "distill=none",
        f"student.name={args.teacher}",
        f"trainer.max_epochs={args.teacher_epochs}",
    ]
    t_metrics, t_ckpt, t_time = _job("teacher", teacher_overrides, out)
    rows = [_row(f"Teacher ({args.teacher})", t_metrics, t_time)]
    results = [{"method": "teacher", "metrics": t_metrics, "seconds": t_time, "checkpoint": t_ckpt}]
    for method in [m for m in args.methods.split(",") if m]:
        overrides = [
            *common,
            f"distill={method}",
            f"teacher.name={args.teacher}",
            f"teacher.checkpoint={t_ckpt}",
            f"student.name={args.student}",
            f"trainer.max_epochs={args.student_epochs}",
        ]
        metrics, ckpt, seconds = _job(method, overrides, out)
        rows.append(_row(f"{LABELS.get(method, method)} ({args.student})", metrics, seconds))
        results.append({"method": method, "metrics": metrics, "seconds": seconds, "checkpoint": ckpt})
    table = "\n".join(
        [
            f"| {'method':<32} | top-1  | mean-class | time s |",
            f"|{'-' * 34}|--------|------------|--------|",
            *rows,
        ]
    )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(table + "\n")
    print(f"\nSynthetic scenes, test split (results in {out}):\n{table}")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (returns nothing, so that ``sys.exit(main())`` exits with 0)."""
    run_quickstart(argv)


if __name__ == "__main__":
    main()
