"""What a distillation step costs next to the student's own step (issue 13), measured in one run.

For each method, kdscene's step (``DistillationModule.features`` + ``loss_terms``, backward, SGD step)
is timed next to the student-only step (CE) and the teacher's forward alone (under ``no_grad``, with
its taps), and the ratio step / (student step + teacher forward) is printed: 1.00 means the method
adds nothing to the two forward passes it cannot avoid (target <= 1.05 for KD, AT and DCT). With the
teacher cache (kdscene-cache) the teacher forward is replaced by reading its recorded logits and
energy maps from memory-mapped files: the cached step is compared with the student step
(target <= 1.1). Everything is measured in one process, repetitions interleaved (every variant once per
round), and the best of the rounds is reported (the median is printed too): the machines are shared.

Settings compared ("kdscene" = the defaults on that device, or --amp/--channels-last/--compile):
  * plain fp32, NCHW, eager, the losses written as the authors' code (their loops);
  * the student step and teacher forward under each of fp32/bf16 x NCHW/channels-last (--explore),
    which is how kdscene's defaults per device were chosen.

Peak memory of one step: CUDA ``max_memory_allocated`` above what was allocated before the step; CPU
the peak resident set size above the RSS before the step (``VmHWM`` of /proc/self/status, reset
through /proc/self/clear_refs; ``n/a`` where that file is not writable).

    PYTHONPATH=. python experiments/bench_step.py                      # CPU pair (R18 -> R10, 64 px)
    PYTHONPATH=. python experiments/bench_step.py --pairs cpu,r50_r18  # + ResNet-50 -> ResNet-18, 224 px
    PYTHONPATH=. python experiments/bench_step.py --device cuda --pairs r50_r18 --json step.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import dataclasses
import json
import logging
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kdscene.cache import CacheWriter
from kdscene.cache.header import FORMAT, VERSION
from kdscene.cli.config import CONFIG_DIR
from kdscene.features import Features
from kdscene.models import BackboneSpec, compile_network
from kdscene.module import DistillationModule

CLASSES = 67  # MIT Indoor 67


@dataclasses.dataclass(frozen=True)
class Pair:
    teacher: str
    student: str
    size: int
    batch: dict[str, int]  # per device type


PAIRS = {
    "cpu": Pair("resnet18", "resnet10", 64, {"cpu": 16, "cuda": 128}),
    "r50_r18": Pair("resnet50", "resnet18", 224, {"cpu": 8, "cuda": 64}),
}
# kdscene's defaults per device (conf/train.yaml, conf/trainer/*.yaml); see README "Speed"
DEFAULTS = {
    "cpu": {"amp": False, "channels_last": True, "compile": False, "benchmark": False},
    "cuda": {"amp": True, "channels_last": True, "compile": False, "benchmark": True},
}
PLAIN = {"amp": False, "channels_last": False, "compile": False, "benchmark": False}
METHODS = ("none", "kd", "at", "dct", "dct_kd", "at_kd", "srm", "fam", "review")
CACHED = ("kd", "at", "dct", "dct_kd", "at_kd")
AUTHORS = ("none", "kd", "at", "dct", "dct_kd")
LABELS = {
    "none": "student only",
    "kd": "KD",
    "at": "AT",
    "dct": "DCT",
    "dct_kd": "DCT + KD",
    "at_kd": "AT + KD",
    "srm": "SRM stage 2",
    "fam": "FAM-KD",
    "review": "ReviewKD",
}


# ---- the methods: the recipes of conf/distill, unchanged (SRM: stage 2 with in-memory dictionaries) ----
def recipe(method: str) -> tuple[dict, list[str] | None, list[str] | None]:
    """(term factories, teacher layers, student layers) of ``conf/distill/<method>.yaml``."""
    if method == "srm":
        node = OmegaConf.load(Path(CONFIG_DIR) / "distill" / "srm.yaml")
        terms = node.stages.predict.terms
        terms.srm.update(dictionary=None, codeword_multiplier=4.0, sparsity_multiplier=0.02)
    else:
        node = OmegaConf.load(Path(CONFIG_DIR) / "distill" / f"{method}.yaml")
        terms = node.terms
    layers = [list(node[k]) if node.get(k) else None for k in ("teacher_layers", "student_layers")]
    return instantiate(terms, _convert_="all"), layers[0], layers[1]


def build(method: str, pair: Pair, device: torch.device, settings: dict, cache: str | None = None):
    terms, t_layers, s_layers = recipe(method)
    torch.manual_seed(0)
    module = DistillationModule(
        student=BackboneSpec(pair.student, CLASSES, layers=s_layers),
        teacher=BackboneSpec(pair.teacher, CLASSES, layers=t_layers),
        distill=terms,
        optimizer=partial(torch.optim.SGD, lr=0.01, momentum=0.9),
        image_size=pair.size,
        channels_last=settings["channels_last"],
        teacher_cache=cache,
    ).to(device)
    module.configure_model()
    if settings["compile"]:
        for net in (module.student, module.teacher):
            if net is not None:
                compile_network(net, "inductor", device.type)
    module.train()
    return module, module.configure_optimizers()


def autocast(device: torch.device, settings: dict):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings["amp"])


def kdscene_step(module, optimizer, batch, device, settings, cache_draw: bool = False) -> Callable[[], None]:
    images, labels, indices = batch
    memory_format = torch.channels_last if settings["channels_last"] else torch.contiguous_format

    def step() -> None:
        torch.backends.cudnn.benchmark = settings["benchmark"]
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, settings):  # the input is converted in every step, as the module does
            student, teacher = module.features(images.contiguous(memory_format=memory_format))
            if cache_draw:
                teacher = module.cached_teacher.features(0, indices, device)
            terms = module.loss_terms(student, teacher, labels)
            loss = torch.stack([v.float() for v in terms.values()]).sum()
        loss.backward()
        optimizer.step()

    return step


def teacher_forward(module, batch, device, settings) -> Callable[[], None]:
    images = batch[0]
    memory_format = torch.channels_last if settings["channels_last"] else torch.contiguous_format

    def forward() -> None:
        torch.backends.cudnn.benchmark = settings["benchmark"]
        with torch.no_grad(), autocast(device, settings):
            module.teacher_tap(images.contiguous(memory_format=memory_format))

    return forward


# ---- the authors' loops: fp32 NCHW eager, their loss code (RepDistiller KD/AT, DCT-KD's DFTOurs.py) ----
def _at(x):
    return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))


def _kd(s, t, temperature=4.0):
    p_s = F.log_softmax(s / temperature, dim=1)
    p_t = F.softmax(t / temperature, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * temperature**2 / s.shape[0]


def _dct_map(fmap):
    def minmax(x):
        flat = x.reshape(x.shape[0], -1)
        lo, hi = flat.min(dim=1)[0][:, None, None], flat.max(dim=1)[0][:, None, None]
        return (x - lo) / hi

    am = minmax(fmap.pow(2).mean(1))
    am = am - am.mean(dim=(1, 2), keepdim=True)
    return minmax(torch.fft.fft(torch.fft.fft(am, dim=1), dim=2).real.abs())


def _dct(fs, ft, labels):
    total = 0.0
    for s, t in zip(fs.maps, ft.maps):
        total = total + (_dct_map(s) - _dct_map(t)).reshape(s.shape[0], -1).pow(2).sum(1).sqrt()
    return (total * (ft.logits.argmax(1) == labels).float()).mean()


def authors_loss(method: str, fs: Features, ft: Features, labels) -> torch.Tensor:
    ce = F.cross_entropy(fs.logits, labels)
    if method == "none":
        return ce
    if method == "kd":
        return 0.1 * ce + 0.8 * _kd(fs.logits, ft.logits)
    if method == "at":
        return ce + 1000.0 * sum((_at(s) - _at(t)).pow(2).mean() for s, t in zip(fs.maps, ft.maps))
    if method == "dct":
        return ce + _dct(fs, ft, labels)
    return 0.1 * ce + _dct(fs, ft, labels) + _kd(fs.logits, ft.logits)


def authors_step(method, module, optimizer, batch) -> Callable[[], None]:
    images, labels, _ = batch

    def step() -> None:
        torch.backends.cudnn.benchmark = False
        optimizer.zero_grad(set_to_none=True)
        ft = None
        if module.teacher_tap is not None:
            with torch.no_grad():
                ft = module.teacher_tap(images)
        authors_loss(method, module.student_tap(images), ft, labels).backward()
        optimizer.step()

    return step


# ---- a teacher cache of random rows, the shapes of the real one, for the cached steps ----
def fake_cache(root: Path, module: DistillationModule, rows: int) -> str:
    taps = [dataclasses.asdict(t) for t in _teacher_taps(module)]
    header = {
        "format": FORMAT,
        "version": VERSION,
        "views": 1,
        "data": {"num_images": rows},
        "num_classes": CLASSES,
        "taps": taps,
        "dtype": "float16",
    }
    writer = CacheWriter(root / "cache", header, _teacher_taps(module), "float16")
    g = torch.Generator().manual_seed(0)
    for start in range(0, rows, 256):
        idx = torch.arange(start, min(start + 256, rows))
        energy = [torch.rand(len(idx), *t["size"], generator=g) + 0.1 for t in taps]
        writer.write(0, idx, idx, torch.randn(len(idx), CLASSES, generator=g), energy)
    return str(writer.finish().path)


def _teacher_taps(module: DistillationModule):
    from kdscene.features import probe

    return probe(module.teacher_tap, module.hparams.image_size)


# ---- measuring ----
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def peak_memory(fn: Callable[[], None], device: torch.device) -> float | None:
    """MiB above the memory in use before one call: CUDA allocations, or CPU resident set size."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    try:
        _LIBC.malloc_trim(0)  # free heap pages go back to the system: the step faults in what it uses
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _status("VmRSS")
    except (OSError, AttributeError):
        return None
    fn()
    return (_status("VmHWM") - before) / 1024


def measure(
    variants: dict[str, Callable[[], None]], device, rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Run every variant ``warmup`` times, then ``rounds`` rounds of one call each (interleaved)."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(timed(fn, device))
    return times


def explore_settings(pair: Pair, batch, device) -> dict[str, Callable[[], None]]:
    """Student step and teacher forward under fp32/bf16 x NCHW/channels-last (student only, no loss)."""
    variants = {}
    for amp in (False, True):
        for cl in (False, True):
            settings = {**PLAIN, "amp": amp, "channels_last": cl}
            module, optimizer = build("none", pair, device, settings)
            teacher_module, _ = build("kd", pair, device, settings)
            tag = f"{'bf16' if amp else 'fp32'}/{'channels_last' if cl else 'NCHW'}"
            variants[f"student step {tag}"] = kdscene_step(module, optimizer, batch, device, settings)
            variants[f"teacher forward {tag}"] = teacher_forward(teacher_module, batch, device, settings)
    return variants


def bench_pair(name: str, pair: Pair, args, device: torch.device, settings: dict) -> dict:
    size = args.batch or pair.batch[device.type]
    g = torch.Generator().manual_seed(0)
    images = torch.randn(size, 3, pair.size, pair.size, generator=g).to(device)
    batch = (
        images,
        torch.randint(0, CLASSES, (size,), generator=g).to(device),
        torch.randperm(4 * size)[:size],
    )
    variants, memory = {}, {}
    kd_module, _ = build("kd", pair, device, settings)
    variants["teacher forward"] = teacher_forward(kd_module, batch, device, settings)
    tmp = tempfile.TemporaryDirectory()
    cache = fake_cache(Path(tmp.name), kd_module, 4 * size)
    for method in args.methods:
        module, optimizer = build(method, pair, device, settings)
        variants[method] = kdscene_step(module, optimizer, batch, device, settings)
        if method in CACHED:
            cmod, copt = build(method, pair, device, settings, cache=cache)
            variants[f"{method} cached"] = kdscene_step(cmod, copt, batch, device, settings, cache_draw=True)
        if method in AUTHORS:
            amod, aopt = build(method, pair, device, PLAIN)
            variants[f"{method} authors"] = authors_step(method, amod, aopt, batch)
    if args.explore:
        variants.update(explore_settings(pair, batch, device))
    print(f"\n[{name}] {pair.teacher} -> {pair.student}, {pair.size} px, batch {size}, {device}, {settings}")
    times = measure(variants, device, args.rounds, args.warmup)
    for key in variants:
        if key in args.methods or key == "teacher forward" or key.endswith(" cached"):
            memory[key] = peak_memory(variants[key], device)
    tmp.cleanup()
    return summarize(pair, size, settings, times, memory, args.methods)


def summarize(pair: Pair, batch: int, settings: dict, times: dict, memory: dict, methods) -> dict:
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    student, teacher = best.get("none"), best["teacher forward"]
    rows = {}
    for method in methods:
        row = {"step_s": best[method], "step_median_s": median[method], "student_step_s": student}
        row.update(teacher_forward_s=teacher, peak_mib=memory.get(method))
        row["ratio"] = best[method] / (student + teacher) if student else None
        if f"{method} cached" in best:
            row["cached_step_s"] = best[f"{method} cached"]
            row["cached_ratio"] = best[f"{method} cached"] / student if student else None
            row["cached_peak_mib"] = memory.get(f"{method} cached")
        if f"{method} authors" in best:
            row["authors_step_s"] = best[f"{method} authors"]
            row["speedup_over_authors"] = best[f"{method} authors"] / best[method]
        rows[method] = row
    explored = {
        k: {"best_s": best[k], "median_s": median[k]}
        for k in best
        if k.startswith(("student step ", "teacher forward "))
    }
    return {
        "pair": dataclasses.asdict(pair),
        "batch": batch,
        "settings": settings,
        "methods": rows,
        "settings_explored": explored,
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict, memory_kind: str) -> None:
    print(
        "| method | step ms | student ms | teacher fwd ms | step / (student + teacher) | cached ms "
        "| cached / student | authors' loop ms | speed-up | peak MiB |\n" + "|---" * 10 + "|"
    )
    for method, r in result["methods"].items():
        cells = [
            LABELS.get(method, method),
            _fmt(1e3 * r["step_s"], ".1f"),
            _fmt(1e3 * r["student_step_s"], ".1f"),
            _fmt(1e3 * r["teacher_forward_s"], ".1f"),
            _fmt(r["ratio"], ".3f"),
            _fmt(r.get("cached_step_s") and 1e3 * r["cached_step_s"], ".1f"),
            _fmt(r.get("cached_ratio"), ".3f"),
            _fmt(r.get("authors_step_s") and 1e3 * r["authors_step_s"], ".1f"),
            _fmt(r.get("speedup_over_authors"), ".2f"),
            _fmt(r["peak_mib"], ".0f"),
        ]
        print("| " + " | ".join(cells) + " |")
    print(f"(best of the rounds; peak memory: {memory_kind})")
    if result["settings_explored"]:
        print("| network pass | best ms | median ms |\n|---|---|---|")
        for key, r in result["settings_explored"].items():
            print(f"| {key} | {1e3 * r['best_s']:.1f} | {1e3 * r['median_s']:.1f} |")
    targets = {m: result["methods"][m]["ratio"] for m in ("kd", "at", "dct") if m in result["methods"]}
    met = {m: r is not None and r <= 1.05 for m, r in targets.items()}
    print(
        "target step / (student + teacher) <= 1.05: "
        + ", ".join(f"{LABELS[m]} {'met' if ok else 'NOT met'}" for m, ok in met.items())
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--pairs", default="cpu", help=f"comma-separated, of {sorted(PAIRS)} (default: cpu)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated; 'none' is the student step")
    p.add_argument("--batch", type=int, default=None, help="default: 16 (cpu pair) / 8 (r50_r18) on CPU")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (every variant once per round)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    p.add_argument(
        "--explore", action=argparse.BooleanOptionalAction, default=True, help="fp32/bf16 x NCHW/CL"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    if "none" not in args.methods:
        args.methods.insert(0, "none")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)  # random teachers
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = dict(DEFAULTS[device.type])
    for key in ("amp", "channels_last", "compile"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    memory_kind = (
        "CUDA max_memory_allocated above the step's start"
        if device.type == "cuda"
        else "peak RSS above the step's start (VmHWM)"
    )
    results = {}
    for name in [p for p in args.pairs.split(",") if p]:
        results[name] = bench_pair(name, PAIRS[name], args, device, settings)
        print_table(results[name], memory_kind)
    record = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "memory": memory_kind,
        "pairs": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
