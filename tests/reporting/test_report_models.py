"""The report never mixes base models (issue 17, item 3): a directory with T5 and LLaMA runs gets the best
configuration per method *and model*, comparisons within a model only, the model in every table and plot legend;
`peftbench status` stays aligned with long run names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from peftbench.evaluation.metrics import score_predictions
from peftbench.recipe.runfiles import ModelId, model_labels
from peftbench.reporting import plots as sr
from peftbench.reporting.build import write_report
from tests.reporting.test_report_intervals import TASKS, _records

T5, LLAMA = "/models/t5-xl-lm-adapt", "/models/llama-gqa"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))


def _run(
    root: Path,
    model: str,
    method: str,
    seed: int,
    lr: float,
    quality: float,
    val: float,
    dtype: str = "bfloat16",
    base: int = 1_000_000,
) -> None:
    name = f"{Path(model).name}-{method}-{lr:g}-s{seed}"
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {
        "model": {"name": model, "dtype": dtype},
        "method": {"name": method},
        "seed": seed,
        "train": {"learning_rate": lr},
        "output_dir": str(root),
        "run_name": name,
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    records = _records(quality, hash((model, method, seed, lr)) % 10_000, TASKS, 6)
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics = {
        **score_predictions(records),
        "status": "finished",
        "method": method,
        "method_config": {},
        "model": model,
        "seed": seed,
        "trainable_params": 1000,
        "total_params": base + 1000,
        "base_params": base,
        "train": {"learning_rate": lr, "steps": 10, "validation": [[10, val]]},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def two_models(tmp_path) -> Path:
    """LoRA is best on T5 (validation 40 vs 20), AdaLoRA on LLaMA (50 vs 10): a report that picks one
    configuration per method across models would show T5's LoRA next to LLaMA's AdaLoRA."""
    root = tmp_path / "runs"
    for seed in (1, 2):
        _run(root, T5, "lora", seed, 1e-4, 0.6, 40)
        _run(root, T5, "lora", seed, 1e-3, 0.4, 35)
        _run(root, T5, "adalora", seed, 1e-3, 0.3, 10)
        _run(root, LLAMA, "lora", seed, 1e-3, 0.3, 20)
        _run(root, LLAMA, "adalora", seed, 1e-3, 0.7, 50)
    return root


def test_best_configuration_per_method_and_model(two_models, tmp_path):
    files = write_report(two_models, tmp_path / "out")
    with files.configurations_csv.open() as f:
        rows = list(csv.DictReader(f))
    best = {(r["model"], r["method"]): r["configuration"] for r in rows if r["best"] == "yes"}
    assert best == {
        ("t5-xl-lm-adapt", "lora"): "lr=0.0001",
        ("t5-xl-lm-adapt", "adalora"): "lr=0.001",
        ("llama-gqa", "lora"): "lr=0.001",
        ("llama-gqa", "adalora"): "lr=0.001",
    }
    summary = files.summary.splitlines()
    assert summary[0].startswith("| model | method | configuration |")
    assert [line.split(" | ")[:2] for line in summary[2:]] == [
        ["| llama-gqa", "adalora"],
        ["| llama-gqa", "lora"],
        ["| t5-xl-lm-adapt", "adalora"],
        ["| t5-xl-lm-adapt", "lora"],
    ]
    with files.differences_csv.open() as f:
        compared = [(r["model"], r["first"], r["second"]) for r in csv.DictReader(f)]
    assert sorted(compared) == [("llama-gqa", "adalora", "lora"), ("t5-xl-lm-adapt", "lora", "adalora")]
    with files.categories_csv.open() as f:
        assert {(r["model"], r["method"]) for r in csv.DictReader(f)} == set(best)
    with files.csv.open() as f:
        assert {r["model"] for r in csv.DictReader(f)} == {"t5-xl-lm-adapt", "llama-gqa"}
    assert "| model | comparison |" in files.differences


def test_plot_legends_name_the_model(two_models, tmp_path, monkeypatch):
    legends: dict[str, list[str]] = {}
    real = sr._figure

    def capture(draw, path, size=(7, 4.5)):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        if draw(ax):
            legends[Path(path).name] = ax.get_legend_handles_labels()[1]
        plt.close(fig)
        return real(draw, path, size)

    monkeypatch.setattr(sr, "_figure", capture)
    write_report(two_models, tmp_path / "out", intervals=False)
    assert "lora · t5-xl-lm-adapt (lr=0.0001)" in legends["report.png"]
    assert "adalora · llama-gqa (lr=0.001)" in legends["report.png"]
    assert set(legends["report_lr.png"]) == {"lora · t5-xl-lm-adapt"}  # the only one with two rates
    assert {"lora · llama-gqa", "adalora · t5-xl-lm-adapt"} <= set(legends["report_categories.png"])


def test_model_labels_add_dtype_and_size_only_where_they_differ():
    a, b = ModelId("/x/t5", "bfloat16", 10), ModelId("/x/t5", "float32", 10)
    c, d = ModelId("/y/t5", "float32", 10), ModelId("/x/llama", "float32", 10)
    assert model_labels([a, b, d]) == {a: "t5 bfloat16", b: "t5 float32", d: "llama"}
    assert model_labels([b, c])[b] == "/x/t5" and model_labels([b, c])[c] == "/y/t5"  # same last part: full path
    e = ModelId("tiny-t5", "float32", 1_044_224)
    f = ModelId("tiny-t5", "float32", 1_100_000)
    assert model_labels([e, f]) == {e: "tiny-t5 (1.04M params)", f: "tiny-t5 (1.1M params)"}


def test_runs_of_one_model_in_two_dtypes_are_selected_apart(tmp_path):
    root = tmp_path / "runs"
    _run(root, T5, "lora", 1, 1e-3, 0.6, 40, dtype="bfloat16")
    _run(root, T5, "lora", 1, 1e-4, 0.3, 10, dtype="float32")
    files = write_report(root, tmp_path / "out", intervals=False)
    with files.configurations_csv.open() as f:
        best = {r["model"]: r["configuration"] for r in csv.DictReader(f) if r["best"] == "yes"}
    assert best == {"t5-xl-lm-adapt bfloat16": "lr=0.001", "t5-xl-lm-adapt float32": "lr=0.0001"}


def test_status_columns_stay_aligned_with_long_run_names(cli, two_models):
    long_name = "lora-r512-lr1e-5-t707-s3-" + "0123456789" * 4
    (two_models / long_name).mkdir()
    (two_models / long_name / "config.yaml").write_text(
        yaml.safe_dump({"model": {"name": T5, "dtype": "bfloat16"}, "run_name": long_name})
    )
    proc = cli("status", str(two_models))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = lines[0]
    assert header.split() == ["run", "model", "status", "checkpoint", "result"]
    for column in ("model", "status"):
        at = header.index(column)
        for line in lines[1:]:
            assert line[at - 2 : at] == "  " and line[at] != " ", (column, line)
    assert any(line.startswith(long_name + "  t5-xl-lm-adapt  new") for line in lines)
    assert sum("llama-gqa" in line for line in lines) == 4
