"""Teacher cache on the synthetic scenes (issue 13): epoch time and accuracy, live teacher vs cache.

The quickstart's regime (kdscene-quickstart): a ResNet-18 teacher trained on 150 images per class,
ResNet-10 students trained from scratch on 20 images per class, 36 px crops, AdamW + one-cycle. For
each seed, the student runs alone, and with KD, AT + KD and DCT + KD twice: with the live teacher and
from a teacher cache recorded for that seed (``kdscene-cache``, ``cache.views`` = the epochs, so that
every epoch replays exactly the views the live run draws). Reported per method: test top-1 as mean ±
std over the seeds, and the training-epoch time (from an epoch's start to its last batch's end,
validation excluded; the first epoch left out) relative to the student-only run: per seed the ratio
of median epochs (mean ± std over seeds), and the ratio of the best epochs over all seeds (best-of-N,
as experiments/bench_step.py: the least disturbed by other processes on a shared machine).

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/cache_synthetic.py [--seeds 3] [--out DIR]
    # more seeds for some methods:  ... --first-seed 3 --seeds 3 --methods kd,dct_kd
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch

from kdscene.cli.cache import record
from kdscene.cli.config import compose_config
from kdscene.cli.quickstart import IMAGES, _data, quiet
from kdscene.cli.train import train

CACHED = ("kd", "at_kd", "dct_kd")


class EpochTimer(L.Callback):
    """Writes each training epoch's time (epoch start to its last batch's end) to ``out`` as JSON."""

    def __init__(self, out: str) -> None:
        self.out, self.times, self._start, self._last = out, [], 0.0, 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(self._last - self._start)
        Path(self.out).write_text(json.dumps(self.times))


def run(name: str, overrides: list[str], out: Path, epochs: int) -> dict:
    """One training job; its test top-1 and its median training-epoch time."""
    timer = out / name / "epoch_times.json"
    settings = [
        f"trainer.max_epochs={epochs}",
        f"trainer.check_val_every_n_epoch={epochs}",
        f"callbacks.last_checkpoint.every_n_epochs={epochs}",
        f"+callbacks.timer={{_target_:__main__.EpochTimer,out:'{timer}'}}",
    ]
    result = train(compose_config("train", [*overrides, *settings], out / name))
    times = json.loads(timer.read_text())
    return {
        "top1": result.metrics["val/acc_top1"],
        "epoch_s": statistics.median(times[1:] or times),  # the first epoch warms up
        "epoch_times": times,
        "checkpoint": result.handover,
    }


def student_runs(seeded: list[str], seed: int, methods: list[str], out: Path, epochs: int) -> dict:
    """One seed: record its cache, then the student alone and each method live and from the cache."""
    cache = out / f"cache_seed{seed}"
    if not cache.exists():
        start = time.perf_counter()
        record(
            compose_config("train", [*seeded, "distill=dct_kd", f"cache.path={cache}"], out / f"rec{seed}")
        )
        print(f"seed {seed}: cache recorded in {time.perf_counter() - start:.1f} s", flush=True)
    rows = {m: run(f"{m}/s{seed}", [*seeded, f"distill={m}"], out, epochs) for m in ["none", *methods]}
    for m in methods:
        cached = [*seeded, f"distill={m}", f"teacher_cache={cache}"]
        rows[f"{m}+cache"] = run(f"{m}_cache/s{seed}", cached, out, epochs)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(CACHED), help=f"of {CACHED}; the student alone always runs")
    p.add_argument("--teacher-epochs", type=int, default=12)
    p.add_argument("--student-epochs", type=int, default=20)
    p.add_argument("--out", default="logs/cache_synthetic")
    args = p.parse_args()
    quiet()
    out = Path(args.out).resolve()
    common = ["data=synthetic", *IMAGES, "logger=csv", "optimizer=adamw", "scheduler=onecycle", "test=false"]
    common += ["callbacks.attention_maps=null", "trainer.enable_progress_bar=false"]
    common += ["trainer.enable_model_summary=false", "trainer.log_every_n_steps=1"]
    teacher_args = [*common, *_data(150), "distill=none", "student.name=resnet18", "data.batch_size=64"]
    teacher = run("teacher", teacher_args, out, args.teacher_epochs)
    print(f"teacher: top-1 {100 * teacher['top1']:.2f}", flush=True)
    student = [*common, *_data(20), "student.name=resnet10", "teacher.name=resnet18"]
    student += [f"teacher.checkpoint={teacher['checkpoint']}", f"trainer.max_epochs={args.student_epochs}"]
    methods = [m for m in args.methods.split(",") if m]
    rows: dict[str, list[dict]] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        runs = student_runs([*student, f"seed={seed}"], seed, methods, out, args.student_epochs)
        for name, result in runs.items():
            rows.setdefault(name, []).append(result)
        print(f"seed {seed} done", flush=True)
    (out / "results.json").write_text(json.dumps({"teacher": teacher, "rows": rows}, indent=1))
    print(table(rows, args.seeds))


def _mean_std(values: list[float], scale: float = 1.0, spec: str = ".2f") -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.fmean(values):{spec}} ± {scale * std:{spec}}"


def _best(runs: list[dict]) -> float:
    return min(t for r in runs for t in (r["epoch_times"][1:] or r["epoch_times"]))


def table(rows: dict[str, list[dict]], seeds: int) -> str:
    """Per method: top-1, median epoch time, its ratio to the student-only run, the best-epoch ratio."""
    base = rows["none"]
    lines = [
        f"| method | top-1 (%), {seeds} seeds | epoch s | epoch / student-only epoch "
        "| best epoch / best student-only |",
        "|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        ratio = [r["epoch_s"] / b["epoch_s"] for r, b in zip(runs, base)]
        label = name.replace("+cache", " (cache)").replace("none", "student only")
        cells = [label, _mean_std([r["top1"] for r in runs], 100), _mean_std([r["epoch_s"] for r in runs])]
        cells += [_mean_std(ratio, spec=".3f"), f"{_best(runs) / _best(base):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
