"""kdscene-collect: a sweep's runs become the papers' table (mean ± std over seeds, best and last epoch).

The runs are fake folders in the real formats (tests/cli/fake_runs.py). Expected numbers are worked by
hand from the curves below: per seed (val top-1, val mean-class) per epoch, in %,

    seed 0: (30, 28) (50, 47) (45, 44)  best epoch 1: 50 / 47, last 45 / 44
    seed 1: (40, 35) (52, 50) (52, 51)  best epoch 1 (the first of a tie): 52 / 50, last 52 / 51
    seed 2: (54, 53) (30, 29) (49, 48)  best epoch 0: 54 / 53, last 49 / 48

so top-1 best 50, 52, 54: mean 52.00, sample std 2.00; last 45, 52, 49: mean 48.67, std
sqrt((3.667² + 3.333² + 0.333²) / 2) = 3.51; mean-class best 47, 50, 53: 50.00 ± 3.00; last 44, 51, 48:
47.67 ± 3.51. The published numbers are those of the DCT paper's MIT Indoor 67 table (methods.md 1.5).
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest

from kdscene.cli.collect import collect, main
from tests.cli.fake_runs import write_run, write_staged_run

CURVES = {
    0: [(0.30, 0.28), (0.50, 0.47), (0.45, 0.44)],
    1: [(0.40, 0.35), (0.52, 0.50), (0.52, 0.51)],
    2: [(0.54, 0.53), (0.30, 0.29), (0.49, 0.48)],
}
TABLE = "experiment=dct_paper_mit_indoor"


def _job(sweep, distill, pair, seed, *extra):
    overrides = [f"distill={distill}", f"pair={pair}", f"seed={seed}", TABLE, *extra]
    name = ",".join(sorted(o for o in overrides if not o.startswith("experiment")))
    return sweep / name, overrides


@pytest.fixture(scope="module")
def sweep_template(tmp_path_factory):
    """A MIT Indoor table sweep: DCT+KD on two pairs and the baseline on one, three seeds each."""
    root = tmp_path_factory.mktemp("template") / "2026-01-01_00-00-00"
    for distill, pair in [("dct_kd", "r50_r18"), ("dct_kd", "r50_mnv2"), ("none", "r50_r18")]:
        for seed, curve in CURVES.items():
            teacher = None if distill == "none" else (0.77, 0.70)
            write_run(*_job(root, distill, pair, seed), curve, teacher=teacher)
    return root


@pytest.fixture
def sweep(sweep_template, tmp_path):
    """A copy of the sweep for one test (which may add runs or write next to it)."""
    root = tmp_path / "logs" / "dct_paper_mit_indoor" / "multiruns" / sweep_template.name
    shutil.copytree(sweep_template, root)
    return root


def _summary(out):
    with (out / "results.csv").open() as f:
        return {(r["row"], r["variant"], r["column"]): r for r in csv.DictReader(f)}


def test_a_sweep_becomes_one_row_per_method_with_mean_and_std_over_seeds(sweep, tmp_path):
    result = collect([sweep], tmp_path / "out", draw=False)
    assert result.runs == 9 and result.skipped == 0
    row = _summary(tmp_path / "out")[("dct_kd", "", "r50_r18")]
    assert row["n"] == "3" and row["seeds"] == "0 1 2"
    assert float(row["top1_best_mean"]) == pytest.approx(52.0) and float(
        row["top1_best_std"]
    ) == pytest.approx(2.0)
    assert float(row["top1_last_mean"]) == pytest.approx(48.6667, abs=1e-4)
    assert float(row["top1_last_std"]) == pytest.approx(3.5119, abs=1e-4)
    assert float(row["mean_class_best_mean"]) == pytest.approx(50.0)
    assert float(row["mean_class_best_std"]) == pytest.approx(3.0)
    assert float(row["mean_class_last_mean"]) == pytest.approx(47.6667, abs=1e-4)
    assert float(row["published_top1"]) == 60.11 and float(row["top1_best_minus_published"]) == pytest.approx(
        -8.11
    )


def test_the_markdown_table_has_the_papers_rows_columns_and_published_numbers(sweep, tmp_path):
    text = collect([sweep], tmp_path / "out", draw=False).markdown
    assert "## MIT Indoor 67" in text
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert header.index("T: R-50 / S: R-18 best") < header.index("T: R-50 / S: MobileNetV2 best")
    lines = text.splitlines()
    baseline = next(i for i, line in enumerate(lines) if line.startswith("| Baseline"))
    dct_kd = next(i for i, line in enumerate(lines) if line.startswith("| DCT (Ours) + KD"))
    teacher = next(i for i, line in enumerate(lines) if line.startswith("| Teacher"))
    assert teacher < baseline < dct_kd  # the teacher first, then the paper's row order
    cells = "52.00 ± 2.00 (3) | 48.67 ± 3.51 (3)"
    assert lines[dct_kd] == f"| DCT (Ours) + KD | {cells} | 60.11 | {cells} | 57.35 |"
    assert lines[teacher].startswith("| Teacher | 77.00 ± 0.00 (3) | 77.00 ± 0.00 (3) | 77.32 |")
    assert "50.00 ± 3.00 (3)" in text.split("**Mean-class accuracy**")[1]


def test_the_teacher_row_counts_only_runs_that_measured_a_teacher(sweep, tmp_path):
    collect([sweep], tmp_path / "out", draw=False)
    teacher = _summary(tmp_path / "out")[("teacher", "", "r50_r18")]
    assert teacher["n"] == "3" and float(teacher["top1_best_mean"]) == pytest.approx(
        77.0
    )  # not the baseline's
    assert float(teacher["mean_class_last_mean"]) == pytest.approx(70.0)


def test_unfinished_runs_are_listed_and_left_out(sweep, tmp_path):
    folder, overrides = _job(sweep, "dct_kd", "r50_r18", 3)
    write_run(folder, overrides, CURVES[0], finished=False)
    result = collect([sweep], tmp_path / "out", draw=False)
    assert result.skipped == 1 and _summary(tmp_path / "out")[("dct_kd", "", "r50_r18")]["n"] == "3"
    assert f"`{folder}`: no result.json" in result.markdown


def test_runs_that_differ_in_another_override_get_their_own_row_without_a_published_number(sweep, tmp_path):
    for seed in (0, 1):
        write_run(*_job(sweep, "dct_kd", "r50_r18", seed, "distill.terms.dct.weight=2"), CURVES[seed])
    collect([sweep], tmp_path / "out", draw=False)
    rows = _summary(tmp_path / "out")
    variant = rows[("dct_kd", "distill.terms.dct.weight=2", "r50_r18")]
    assert variant["row_label"] == "DCT (Ours) + KD [distill.terms.dct.weight=2]" and variant["n"] == "2"
    assert variant["published_top1"] == "" and float(variant["top1_best_mean"]) == pytest.approx(51.0)
    assert rows[("dct_kd", "", "r50_r18")]["n"] == "3"


@pytest.mark.parametrize("top_level", [True, False])
def test_a_multi_stage_run_counts_with_its_final_stage(tmp_path, top_level):
    better = [(0.99, 0.99)]  # earlier stages: must not be taken
    stages = {"dictionary": better, "predict": better, "kd": CURVES[0]}
    overrides = ["distill=srm", "pair=r50_r18", "seed=0", TABLE]
    write_staged_run(tmp_path / "sweep" / "srm", overrides, stages, top_level=top_level)
    collect([tmp_path / "sweep"], tmp_path / "out", draw=False)
    row = _summary(tmp_path / "out")[("srm", "", "r50_r18")]
    assert float(row["top1_best_mean"]) == pytest.approx(50.0) and float(
        row["top1_last_mean"]
    ) == pytest.approx(45.0)


def test_without_a_curve_the_best_and_last_come_from_result_json(tmp_path):
    write_run(*_job(tmp_path / "sweep", "kd", "r50_r18", 0), CURVES[2], with_csv=False)
    collect([tmp_path / "sweep"], tmp_path / "out", draw=False)
    row = _summary(tmp_path / "out")[("kd", "", "r50_r18")]
    assert float(row["top1_best_mean"]) == pytest.approx(54.0) and float(
        row["top1_last_mean"]
    ) == pytest.approx(49.0)
    assert row["mean_class_best_mean"] == "" and float(row["mean_class_last_mean"]) == pytest.approx(48.0)


def test_teacher_runs_form_a_table_of_data_sets_by_networks(tmp_path):
    root = tmp_path / "teachers"
    for data, top1 in (("mit_indoor", 0.75), ("ade20k", 0.55)):
        overrides = ["experiment=dct_paper_teacher", f"data={data}", "student.name=resnet50"]
        write_run(root / data / "resnet50", overrides, [(top1 - 0.1, 0.5), (top1, 0.6)], teacher=None)
    result = collect([root], tmp_path / "out", draw=False)
    assert "## DCT paper teachers (ImageNet-pretrained, fine-tuned)" in result.markdown
    assert "| ADE20K | 55.00 (1) | 55.00 (1) | 58.34 |" in result.markdown
    assert "| MIT Indoor 67 | 75.00 (1) | 75.00 (1) | 77.32 |" in result.markdown


def test_per_run_csv_lists_each_runs_best_epoch(sweep, tmp_path):
    collect([sweep], tmp_path / "out", draw=False)
    with (tmp_path / "out" / "runs.csv").open() as f:
        runs = [r for r in csv.DictReader(f) if r["row"] == "dct_kd" and r["column"] == "r50_r18"]
    assert sorted((r["seed"], r["best_epoch"], r["top1_best"]) for r in runs) == [
        ("0", "1", "50.0000"),
        ("1", "1", "52.0000"),
        ("2", "0", "54.0000"),
    ]


def test_plots_are_png_files_per_table(sweep, tmp_path):
    pytest.importorskip("matplotlib")
    result = collect([sweep], tmp_path / "out")
    assert sorted(p.name for p in result.plots) == ["mit_indoor_67_bars.png", "mit_indoor_67_curves.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in result.plots)


def test_without_matplotlib_plots_are_skipped_with_a_one_line_note(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib... raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = collect([sweep], tmp_path / "out")
    assert result.plots == () and (tmp_path / "out" / "results.md").is_file()
    assert capsys.readouterr().err.strip() == (
        "kdscene-collect: plots skipped (matplotlib is not installed: pip install matplotlib)"
    )


def test_the_console_entry_writes_next_to_the_sweep_without_importing_torch(sweep):
    code = (
        "import sys; from kdscene.cli.collect import main\n"
        f"rc = main([{str(sweep)!r}, '--no-plots'])\n"
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'torch was imported'\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "| DCT (Ours) + KD | 52.00 ± 2.00 (3)" in result.stdout
    assert (sweep / "results.md").is_file() and (sweep / "results.csv").is_file()


def test_no_finished_run_exits_1_and_a_missing_folder_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--no-plots"]) == 1
    assert "no finished run" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
