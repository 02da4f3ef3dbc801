"""experiments/bench_step.py runs on CPU and writes every figure the README table is made of (slow)."""

from __future__ import annotations

import json

import pytest

from experiments.bench_step import main

pytestmark = pytest.mark.slow


def test_the_step_benchmark_writes_times_ratios_memory_and_cached_steps(tmp_path):
    out = tmp_path / "step.json"
    args = ["--methods", "kd,dct,fam", "--batch", "2", "--rounds", "2", "--warmup", "0", "--no-explore"]
    main([*args, "--threads", "1", "--json", str(out)])
    record = json.loads(out.read_text())
    assert record["device"] == "cpu" and record["threads"] == 1
    pair = record["pairs"]["cpu"]
    assert pair["settings"]["channels_last"] is True and pair["settings"]["amp"] is False  # CPU defaults
    rows = pair["methods"]
    assert list(rows) == ["none", "kd", "dct", "fam"]
    for method, row in rows.items():
        for key in ("step_s", "student_step_s", "teacher_forward_s", "ratio", "peak_mib"):
            assert row[key] is not None and row[key] >= 0, (method, key)
        assert row["ratio"] == pytest.approx(
            row["step_s"] / (row["student_step_s"] + row["teacher_forward_s"])
        )
    for method in ("kd", "dct"):  # the cache can feed these: their cached step is measured
        assert rows[method]["cached_ratio"] == pytest.approx(
            rows[method]["cached_step_s"] / rows["none"]["step_s"]
        )
        assert rows[method]["speedup_over_authors"] > 0
    assert "cached_step_s" not in rows["fam"]  # FAM-KD needs the live teacher
