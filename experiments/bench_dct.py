"""Benchmark of kdscene's DCTAttentionLoss on the ResNet-50 -> ResNet-18 shapes (issue #3).

(1) Loss forward+backward of kdscene vs the same pipeline written the authors' way (``torch.fft`` along
    H then W, ``pow(2).mean(1)``, separate student/teacher passes) for the "submission" and "final"
    variants, and vs the same pipeline with ``torch_dct.dct_2d(norm="ortho")`` for "dct2"; the values
    must agree to 1e-4 (relative).
(2) The loss's share of one full distillation step: torchvision ResNet-50 teacher forward (no_grad) +
    ResNet-18 student forward/backward + CE + DCT loss. It must stay under 5%.

Full size (GPU):   python experiments/bench_dct.py --device cuda
Small CPU check:   OMP_NUM_THREADS=2 python experiments/bench_dct.py --batch 8 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import torch
import torch_dct
import torchvision

from kdscene.features import Features, FeatureTap
from kdscene.losses import DCTAttentionLoss

LAYERS = ("layer1", "layer2", "layer3", "layer4")
TEACHER_CH = (256, 512, 1024, 2048)
STUDENT_CH = (64, 128, 256, 512)


def timeit(fn, repeats: int, warmup: int, device: torch.device) -> float:
    """Wall time of ``fn()`` in ms: the best of ``repeats`` (robust to other processes on the machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


# ---- the same pipeline written the way the authors' DFTOurs.py does it (plain ops, per network) ----
def _plain_minmax(x, submission):
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1)[0][:, None, None]
    hi = flat.max(dim=1)[0][:, None, None]
    return (x - lo) / (hi if submission else hi - lo)


def _plain_freq(fmap, variant):
    submission = variant == "submission"
    am = _plain_minmax(fmap.pow(2).mean(1), submission)
    am = am - am.mean(dim=(1, 2), keepdim=True)
    if variant == "dct2":
        d = torch_dct.dct_2d(am, norm="ortho")
    else:
        d = torch.fft.fft(torch.fft.fft(am, dim=1), dim=2).real
        d = d.abs() if submission else d
    return _plain_minmax(d, submission)


def plain_loss(student: Features, teacher: Features, labels, variant):
    total = 0.0
    for s, t in zip(student.maps, teacher.maps):
        diff = (_plain_freq(s, variant) - _plain_freq(t, variant)).reshape(s.shape[0], -1)
        total = total + torch.sqrt(torch.sum(diff.pow(2), dim=1))
    mask = (torch.argmax(teacher.logits, dim=1) == labels).float()
    return (total * mask).mean()


# ---- (1) loss alone ----
def make_features(args, device):
    g = torch.Generator().manual_seed(0)
    sizes = [args.size // s for s in (4, 8, 16, 32)]
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format

    def maps(chans, grad):
        out = []
        for c, h in zip(chans, sizes):
            x = torch.randn(args.batch, c, h, h, generator=g).relu_().to(device, memory_format=fmt)
            out.append(x.requires_grad_(grad))
        return tuple(out)

    logits = torch.randn(args.batch, 10, generator=g).to(device)
    labels = logits.argmax(1)
    labels[::2] = (labels[::2] + 1) % 10  # half the teacher's predictions wrong: the mask matters
    student = Features(logits=logits.clone(), maps=maps(STUDENT_CH, True), names=LAYERS)
    teacher = Features(logits=logits, maps=maps(TEACHER_CH, False), names=LAYERS)
    return student, teacher, labels


def fwd_bwd(loss_fn, student, teacher, labels):
    def run():
        for m in student.maps:
            m.grad = None
        value = loss_fn(student, teacher, labels)
        value.backward()
        return value

    return run


def bench_loss(args, device):
    student, teacher, labels = make_features(args, device)
    print(f"(1) loss fwd+bwd, batch {args.batch}, {args.size} px, device {device}")
    refs = {"submission": "authors' way", "final": "authors' way", "dct2": "torch-dct"}
    for variant, ref_name in refs.items():
        ours = DCTAttentionLoss(variant=variant)
        ours_fn = fwd_bwd(lambda s, t, y, o=ours: o(s, t, y)["dct"], student, teacher, labels)
        ref_fn = fwd_bwd(lambda s, t, y, v=variant: plain_loss(s, t, y, v), student, teacher, labels)
        a, b = ours_fn().item(), ref_fn().item()
        assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), f"{variant}: kdscene {a} vs reference {b}"
        t_ours = timeit(ours_fn, args.repeats, args.warmup, device)
        t_ref = timeit(ref_fn, args.repeats, args.warmup, device)
        line = f"  {variant:10s} kdscene {t_ours:8.2f} ms | {ref_name:12s} {t_ref:8.2f} ms"
        print(f"{line} | ratio ref/kdscene {t_ref / t_ours:5.2f} | values {a:.5f} vs {b:.5f}")
        for backend in ("matmul", "fft") + (("torch_dct",) if variant == "dct2" else ()):
            other = DCTAttentionLoss(variant=variant, backend=backend)
            fn = fwd_bwd(lambda s, t, y, o=other: o(s, t, y)["dct"], student, teacher, labels)
            t = timeit(fn, args.repeats, args.warmup, device)
            print(f"      backend={backend:9s} {t:8.2f} ms (auto/this {t_ours / t:5.2f})")


# ---- (2) share of a full distillation step ----
def bench_step(args, device):
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    teacher = torchvision.models.resnet50(num_classes=1055).to(device, memory_format=fmt).eval()
    student = torchvision.models.resnet18(num_classes=1055).to(device, memory_format=fmt).train()
    ttap, stap = FeatureTap(teacher, LAYERS), FeatureTap(student, LAYERS)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)
    labels = torch.randint(0, 1055, (args.batch,), device=device)
    dct, ce = DCTAttentionLoss(pred_guide=False), torch.nn.CrossEntropyLoss()
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)

    def step(with_dct=True):
        student.zero_grad(set_to_none=True)
        with amp:
            with torch.no_grad():
                ft = ttap(x)
            fs = stap(x)
            loss = ce(fs.logits, labels)
            if with_dct:
                loss = loss + dct(fs, ft, labels)["dct"]
        loss.backward()
        return fs, ft

    fs, ft = step()
    leaf = Features(fs.logits.detach(), tuple(m.detach().requires_grad_() for m in fs.maps), LAYERS)
    tdet = Features(ft.logits, tuple(m.detach() for m in ft.maps), LAYERS)

    def loss_only():
        with amp:
            value = dct(leaf, tdet, labels)["dct"]
        value.backward()

    t_step = timeit(step, args.step_repeats, 1, device)
    t_plain = timeit(lambda: step(False), args.step_repeats, 1, device)
    t_loss = timeit(loss_only, args.repeats, args.warmup, device)
    share = t_loss / t_step
    print(f"(2) full step (R50 teacher fwd + R18 fwd/bwd + CE + DCT), amp={args.amp}: {t_step:.1f} ms;")
    print(f"    DCT loss alone {t_loss:.2f} ms = {100 * share:.2f}% of the step")
    print(f"    (step without the DCT term {t_plain:.1f} ms: difference {100 * (1 - t_plain / t_step):.2f}%)")
    assert share < 0.05, f"the DCT loss takes {100 * share:.1f}% of a distillation step (limit 5%)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="input size; maps are size/4 ... size/32")
    p.add_argument("--repeats", type=int, default=20, help="timed runs of the loss alone")
    p.add_argument("--step-repeats", type=int, default=10, help="timed runs of the full step")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--amp", action="store_true", help="bf16 autocast in the full step")
    p.add_argument("--skip-step", action="store_true", help="only part (1)")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    bench_loss(args, device)
    if not args.skip_step:
        bench_step(args, device)


if __name__ == "__main__":
    main()
