"""``kdscene-quickstart``: the main job, showing what distillation is for, on the built-in synthetic scenes.

The regime is the DCT paper's: the teacher has learned from much more data than the student (as an
ImageNet-pretrained teacher fine-tuned on the scene set has), and the student learns from scratch on a
small training set. Concretely, in one process: synthetic scenes are generated twice from the same
generator (a large training set for the teacher, a small one for the students, the same test set:
each image is a function of its class, split and number only); a teacher is trained on the large set;
then each method trains a student on the small set, once per seed. The table reports, per method,
top-1 and mean-class accuracy on the test split as mean ± std over seeds, and the gain over the
student alone (mean ± std of the per-seed differences: the same seed gives the same initialisation
and data order to every method). Rerunning with the same ``--out`` continues: finished runs are
reused. Extra arguments are Hydra overrides applied to every run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from kdscene.cli.config import compose_config
from kdscene.cli.tables import Stat
from kdscene.cli.train import train

# the rows of the table, in order (any conf/distill name works with --methods)
DEFAULT_METHODS = ("none", "kd", "at_kd", "dct", "dct_kd", "srm", "review", "fam")
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
    """The command line (``--help`` lists every option)."""
    parser = argparse.ArgumentParser(
        prog="kdscene-quickstart", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated conf/distill names")
    add("--seeds", type=int, default=3, help="student runs per method (default: %(default)s)")
    add("--teacher", default="resnet18", help="teacher network (default: %(default)s)")
    add("--student", default="resnet10", help="student network (default: %(default)s)")
    add("--teacher-images", type=int, default=120, help="teacher's training images per class (%(default)s)")
    add("--student-images", type=int, default=16, help="students' training images per class (%(default)s)")
    add("--teacher-epochs", type=int, default=10, help="(default: %(default)s)")
    add("--student-epochs", type=int, default=10, help="per stage without its own epochs (%(default)s)")
    add("--out", default=None, help="output folder (default: $KDSCENE_ROOT/logs/quickstart/<time>)")
    add("overrides", nargs="*", help="Hydra overrides for every run, e.g. data.reader.test_per_class=100")
    return parser.parse_args(argv)


def quiet() -> None:
    """Keep the console to progress lines and the table: Lightning's per-fit info lines go.

    Lightning sets its loggers to INFO when it is imported, so it is imported first.
    """
    import lightning  # noqa: F401

    for name in ("lightning.pytorch", "lightning.fabric", "kdscene"):
        logging.getLogger(name).setLevel(logging.WARNING)


# the quickstart's images: 40 px scenes, random 36 px crops (the smallest size at which a ResNet's
# last stage is 2x2: a 1x1 map makes the DCT loss 0/0), 50 test images per class
PROGRESS = "kdscene.callbacks.ProgressLine"
IMAGES = ["data.reader.generated_size=40", "data.resize=40", "data.image_size=36"]


def _data(per_class: int) -> list[str]:
    """Overrides of one of the two synthetic training sets (both share the same test set)."""
    return [
        f"data.root=${{paths.data_dir}}/synthetic_scenes_{per_class}",
        f"data.reader.train_per_class={per_class}",
    ]


def _run(name: str, label: str, overrides: list[str], out: Path, epochs: int) -> dict[str, Any]:
    """One job (checkpoint written once, at the end; validated once, at the end)."""
    start = time.perf_counter()
    label_value = label.replace("'", "")
    settings = [
        f"trainer.max_epochs={epochs}",
        # a stage with its own max_epochs (SRM's first two) validates and checkpoints at its own end
        "trainer.check_val_every_n_epoch=${trainer.max_epochs}",
        "callbacks.last_checkpoint.every_n_epochs=${trainer.max_epochs}",
        # the label names the stage of a multi-stage recipe (${distill.stage} is "" otherwise)
        f"+callbacks.progress={{_target_:{PROGRESS},label:'{label_value} ${{distill.stage}}'}}",
        "ckpt_path=last",  # rerunning with the same --out reuses finished runs
    ]
    result = train(compose_config("train", [*overrides, *settings], out / name))
    metrics = result.metrics
    return {
        "top1": metrics.get("val/acc_top1", float("nan")),
        "mean_class": metrics.get("val/acc_mean_class", float("nan")),
        "seconds": time.perf_counter() - start,
        "checkpoint": result.handover,
    }


def table(rows: dict[str, list[dict[str, Any]]], teacher: dict[str, Any], student: str) -> str:
    """The Markdown table: per method, mean ± std over seeds and the paired gain over the student alone."""
    base = rows.get("none")
    lines = [
        "| method | top-1 | gain | mean-class | gain | s / run |",
        "|---|---|---|---|---|---|",
        f"| Teacher ({teacher['network']}) | {100 * teacher['top1']:6.2f} | "
        f"| {100 * teacher['mean_class']:6.2f} | | {teacher['seconds']:.0f} |",
    ]
    for method, runs in rows.items():
        cells = [f"{LABELS.get(method, method)} ({student})"]
        for key in ("top1", "mean_class"):
            cells.append(Stat.of(r[key] for r in runs).text(count=False))
            paired = [r[key] - b[key] for r, b in zip(runs, base)] if base and method != "none" else []
            cells.append(Stat.of(paired).text(count=False, sign=True) if paired else "")
        cells.append(f"{statistics.fmean(r['seconds'] for r in runs):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_quickstart(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train the teacher and every method's students; print and write the table; return the records."""
    args = parse_args(argv)
    quiet()
    root = Path(os.environ.get("KDSCENE_ROOT", "."))
    out = Path(args.out or root / "logs" / "quickstart" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}").resolve()
    common = ["data=synthetic", *IMAGES, "logger=csv", "optimizer=adamw", "scheduler=onecycle", "test=false"]
    common += ["callbacks.attention_maps=null", "trainer.enable_progress_bar=false", *args.overrides]
    common += ["trainer.enable_model_summary=false", "trainer.log_every_n_steps=1"]
    # validated and checkpointed once, at the end: no sanity pass, no second (best) checkpoint
    common += ["trainer.num_sanity_val_steps=0", "callbacks.model_checkpoint=null"]
    methods = [m for m in args.methods.split(",") if m]
    seeds = f"{args.seeds} seed{'s' if args.seeds != 1 else ''}"
    print(f"kdscene quickstart: {len(methods)} methods x {seeds}; results in {out}", flush=True)
    teacher = _run(
        "teacher",
        f"Teacher ({args.teacher})",
        [
            *common,
            *_data(args.teacher_images),
            "distill=none",
            f"student.name={args.teacher}",
            "data.batch_size=64",
        ],
        out,
        args.teacher_epochs,
    )
    teacher["network"] = args.teacher
    student = [*common, *_data(args.student_images), f"student.name={args.student}"]
    student += [f"teacher.name={args.teacher}", f"teacher.checkpoint={teacher['checkpoint']}"]
    rows: dict[str, list[dict[str, Any]]] = {}
    for method in methods:
        label = LABELS.get(method, method)
        rows[method] = [
            _run(
                f"{method}/seed{seed}",
                f"{label} (seed {seed})",
                [*student, f"distill={method}", f"seed={seed}"],
                out,
                args.student_epochs,
            )
            for seed in range(args.seeds)
        ]
    text = table(rows, teacher, args.student)
    (out / "results.json").write_text(json.dumps({"teacher": teacher, "methods": rows}, indent=1))
    (out / "results.md").write_text(text + "\n")
    print(f"\nSynthetic scenes, test split, {seeds} (results in {out}):\n{text}", flush=True)
    return {"teacher": teacher, "methods": rows, "out": str(out)}


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (returns nothing, so that ``sys.exit(main())`` exits with 0)."""
    run_quickstart(argv)


if __name__ == "__main__":
    main()
