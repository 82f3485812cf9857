"""The study's report on synthetic finished runs with known scores: grouping over seeds, selection on
validation, the tables, the plots and the self-contained HTML page."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from peftbench.reporting.build import write_report
from tests.conftest import in_process

CATEGORIES = ("Sentiment Analysis", "Text Copying")


def _run(
    root: Path, method: str, seed: int, lr: float, size: int | None, tasks: int, val: float, test: float, percent: float
) -> None:
    options = {"r": size} if method == "lora" else ({"size": size} if size else {})
    name = f"{method}-{size}-{lr:g}-{tasks}-s{seed}"
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {
        "model": {"name": "tiny-t5"},
        "method": {"name": method, **options},
        "seed": seed,
        "train": {"learning_rate": lr, "report_to": []},
        "data": {"num_train_tasks": tasks},
        "output_dir": str(root),
        "run_name": name,
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    per_category = {c: {"exact_match": test / 2, "rougeL": test + i} for i, c in enumerate(CATEGORIES)}
    metrics = {
        "status": "finished", "method": method, "method_config": options, "model": "tiny-t5", "seed": seed,
        "overall": {"exact_match": test / 2, "rougeL": test}, "per_category": per_category, "per_task": {},
        "trainable_params": int(percent * 1000), "total_params": 100_000, "base_params": 100_000,
        "trainable_percent": percent,
        "train": {"learning_rate": lr, "steps": 10, "validation": [[5, val - 1], [10, val]]},
        "data": {"train_tasks": tasks}, "train_time_s": 2.0, "peak_memory_mb": 100.0,
    }  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def study(tmp_path) -> Path:
    root = tmp_path / "runs"
    # LoRA: lr 1e-3 is best on validation (test 30/32) although lr 1e-4 has the higher test score (40/44):
    # selection must follow validation, not test.
    for seed, (v1, t1, v2, t2) in {1: (20, 30, 10, 40), 2: (22, 32, 12, 44)}.items():
        _run(root, "lora", seed, 1e-3, 8, 8, v1, t1, 0.5)
        _run(root, "lora", seed, 1e-4, 8, 8, v2, t2, 0.5)
        _run(root, "lora", seed, 1e-3, 8, 2, v1 - 5, t1 - 10, 0.5)
        _run(root, "full", seed, 5e-5, None, 8, 25 + seed, 35 + seed, 100.0)
    return root


def test_best_configuration_is_chosen_on_validation_and_reported_on_test(study, tmp_path):
    files = write_report(study, tmp_path / "out")
    best = {row["method"]: row for row in csv.DictReader(files.configurations_csv.open()) if row["best"] == "yes"}
    assert best["lora"]["configuration"] == "r=8 lr=0.001 tasks=8"
    mean, std = statistics.fmean([30, 32]), statistics.stdev([30, 32])
    assert best["lora"]["test ROUGE-L"] == f"{mean:.2f} ± {std:.2f}"
    assert best["lora"]["validation ROUGE-L"] == f"{21:.2f} ± {statistics.stdev([20, 22]):.2f}"
    assert best["lora"]["seeds"] == "1, 2"
    assert best["full"]["test ROUGE-L"] == f"{36.5:.2f} ± {statistics.stdev([36, 37]):.2f}"
    text = files.markdown.read_text()
    assert "Chosen on validation ROUGE-L" in text and "| lora | r=8 lr=0.001 tasks=8 | 2 |" in text
    assert "4 configurations" in text and "## Runs" in text


def test_plots_and_self_contained_html(study, tmp_path):
    files = write_report(study, tmp_path / "out")
    names = {p.name for p in files.plots}
    assert names == {"report.png", "report_lr.png", "report_tasks.png", "report_categories.png"}
    for path in files.plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    page = files.html.read_text()
    assert page.count("data:image/png;base64,") == 4 and 'src="report' not in page  # embedded, no links
    assert "Best configuration per method" in page and "<table>" in page


def test_plots_are_skipped_without_variation_and_stale_ones_removed(study, tmp_path):
    out = tmp_path / "out"
    write_report(study, out)
    only_one_lr = tmp_path / "one"
    for seed in (1, 2):
        _run(only_one_lr, "lora", seed, 1e-3, 8, 8, 20, 30, 0.5)
    files = write_report(only_one_lr, out)
    assert {p.name for p in files.plots} == {"report.png", "report_categories.png"}
    assert not (out / "report_lr.png").exists() and not (out / "report_tasks.png").exists()


def test_without_validation_the_selection_says_so(tmp_path):
    root = tmp_path / "runs"
    for seed in (1, 2):
        _run(root, "lora", seed, 1e-3, 8, 8, 20, 30, 0.5)
    for metrics_path in root.rglob("metrics.json"):
        metrics = json.loads(metrics_path.read_text())
        metrics["train"]["validation"] = []
        metrics_path.write_text(json.dumps(metrics))
    files = write_report(root, tmp_path / "out")
    assert "not the study's protocol" in files.markdown.read_text()


def test_report_cli_lists_every_file(study, tmp_path):
    proc = in_process("report", str(study), "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "best configuration per method:" in proc.stdout
    for name in ("report.md", "report.html", "report.csv", "report_configurations.csv", "report_lr.png"):
        assert name in proc.stdout


def test_peak_memory_is_named_for_what_it_counts_and_old_runs_stay_readable(tmp_path):
    """New runs record their own peak tensor memory (kind tensor_bytes / cuda_max_allocated); older ones the
    process's peak RSS (cpu_peak_rss): the column is named for the kinds present, each run says what its figure
    is, and the notes explain both."""
    root = tmp_path / "runs"
    _run(root, "lora", 1, 1e-3, 8, 8, 20, 30, 0.5)
    _run(root, "full", 1, 5e-5, None, 8, 25, 35, 100.0)
    kinds = {"lora": ("tensor_bytes", 33.6), "full": ("tensor_bytes", 48.1)}
    for path in root.glob("*/metrics.json"):
        metrics = json.loads(path.read_text())
        kind, mb = kinds[metrics["method"]]
        metrics.update(peak_memory_kind=kind, peak_memory_mb=mb, peak_memory_of="training")
        path.write_text(json.dumps(metrics))
    files = write_report(root, tmp_path / "new")
    md = files.markdown.read_text()
    assert "| peak tensor memory (MB) | peak memory of |" in md and "tensors, training" in md
    assert "Peak memory is each run's own" in md and "process RSS" not in md
    assert "peak tensor memory (MB) |" in md.split("## Which")[0]  # the best-configuration table too
    rows = list(csv.DictReader(files.csv.open()))
    assert sorted(float(r["peak tensor memory (MB)"]) for r in rows) == [33.6, 48.1]

    full = next(root.glob("full-*/metrics.json"))  # an older run: the process's peak resident set
    metrics = json.loads(full.read_text())
    metrics.update(peak_memory_kind="cpu_peak_rss", peak_memory_mb=638.0)
    del metrics["peak_memory_of"]
    full.write_text(json.dumps(metrics))
    md = write_report(root, tmp_path / "mixed").markdown.read_text()
    assert "| peak memory (MB) | peak memory of |" in md and "| 638.00 | process RSS |" in md
    assert "is not comparable with the other figures" in md
