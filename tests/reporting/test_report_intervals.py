"""The report's intervals and paired tests on synthetic finished runs with predictions of known quality:
point estimates equal the reported scores, a planted difference is called real and an equal pair is not (with the
difference it could have missed), the tables, CSVs and plots carry the numbers, seed variance widens the
intervals, and the edge cases still report. The procedure itself: tests/evaluation/test_inference.py."""

from __future__ import annotations

import csv
import json
import random
import shutil
import statistics
import zlib
from pathlib import Path

import pytest
import yaml

from peftbench.cli import main
from peftbench.evaluation.metrics import score_predictions
from peftbench.recipe.instance_scores import read_run_scores, record_instance_scores
from peftbench.reporting.analysis import annotate_models, configurations
from peftbench.reporting.build import ReportFiles, collect_runs, write_report
from peftbench.reporting.differences import differences_csv_rows
from peftbench.reporting.plots import selection
from peftbench.reporting.significance import analyse

TASKS = {
    f"task{i:03d}_{'copy' if i % 2 else 'label'}": "Text Copying" if i % 2 else "Sentiment Analysis" for i in range(10)
}
WORDS = ["red", "green", "blue", "small", "large", "quick", "slow", "bright", "dark", "round"]


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFTBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _records(quality: float, seed: int, tasks: dict[str, str], instances: int) -> list[dict]:
    """Predictions that are right with probability ``quality`` (task difficulty varies), else half right or wrong."""
    rng = random.Random(seed)
    records = []
    for t, (task, category) in enumerate(sorted(tasks.items())):
        for i in range(instances):
            reference = " ".join(random.Random(t * 1000 + i).sample(WORDS, 4))  # the same references for every run
            draw = rng.random() * (0.7 + 0.06 * t)
            prediction = (
                reference
                if draw < quality
                else (reference[: len(reference) // 2] if draw < 1.1 * quality else rng.choice(WORDS))
            )
            records.append(
                {
                    "id": f"{task}-{i}",
                    "task": task,
                    "category": category,
                    "prediction": prediction,
                    "references": [reference],
                }
            )
    return records


def _run(
    root: Path,
    method: str,
    seed: int,
    quality: float,
    lr: float = 1e-3,
    val: float = 30.0,
    *,
    tasks: dict[str, str] = TASKS,
    instances: int = 12,
    data: str | None = None,
    steps: int | None = None,
) -> Path:
    name = f"{method}-{lr:g}-s{seed}" + (f"-{steps}steps" if steps else "")
    run_dir = root / (f"{data}/{name}" if data else name)
    run_dir.mkdir(parents=True)
    config = {
        "model": {"name": "tiny-t5"},
        "method": {"name": method},
        "seed": seed,
        "train": {"learning_rate": lr, **({"max_steps": steps} if steps else {})},
        "output_dir": str(root),
        "run_name": name,
        **({"data": {"data_dir": f"/data/{data}", "split": "default"}} if data else {}),
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    records = _records(quality, zlib.crc32(f"{method} {seed} {lr}".encode()), tasks, instances)
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics = {
        **score_predictions(records),
        "status": "finished",
        "method": method,
        "method_config": {},
        "model": "tiny-t5",
        "seed": seed,
        "config_hash": zlib.crc32(f"{method} {lr} {seed} {data} {steps}".encode()).to_bytes(4).hex(),  # seed included
        "trainable_params": 1000 if method == "full" else 10,
        "total_params": 1000,
        "base_params": 1000,
        "trainable_percent": 100.0 if method == "full" else 1.0,
        "train": {"learning_rate": lr, "steps": 10, "validation": [[10, val]]},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """full and lora equally good (same distribution, different draws), prompt much worse; lora has a second
    learning rate that loses on validation. Tests must not change it (see ``runs``)."""
    root = tmp_path_factory.mktemp("study") / "runs"
    for seed in (1, 2):
        _run(root, "full", seed, 0.8, val=40)
        _run(root, "lora", seed, 0.8, val=39)
        _run(root, "lora", seed, 0.5, lr=1e-4, val=20)
        _run(root, "prompt", seed, 0.25, lr=0.3, val=10)
    return root


@pytest.fixture(scope="module")
def report(study, tmp_path_factory) -> ReportFiles:
    """The report of ``study`` with the defaults."""
    return write_report(study, tmp_path_factory.mktemp("report"))


@pytest.fixture
def runs(study, tmp_path) -> Path:
    """A copy of ``study`` a test may change."""
    return Path(shutil.copytree(study, tmp_path / "runs"))


def _csv_table(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_intervals_surround_the_reported_scores(report):
    configurations = _rows(report.configurations_csv)
    assert len(configurations) == 4
    for row in configurations:
        mean = float(row["test ROUGE-L"].split(" ± ")[0])
        assert float(row["ROUGE-L 95% low"]) < mean < float(row["ROUGE-L 95% high"])
        em = float(row["test EM"].split(" ± ")[0])
        assert float(row["EM 95% low"]) < em < float(row["EM 95% high"])
        assert (row["test tasks"], row["test instances"]) == ("10", "120")


def test_per_instance_scores_reproduce_the_official_overall(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))
    run_dir = runs / "lora-0.001-s1"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    scores = read_run_scores(run_dir, metrics)
    assert scores.values[1].mean() == pytest.approx(metrics["overall"]["rougeL"], abs=1e-4)
    assert scores.values[0].mean() == pytest.approx(metrics["overall"]["exact_match"], abs=1e-4)
    assert len(list((tmp_path / "cache" / "instance-scores").iterdir())) == 1
    again = read_run_scores(run_dir, metrics)  # from the cache this time
    assert (again.values == scores.values).all() and again.ids == scores.ids


def test_a_run_keeps_its_instance_scores_and_a_stale_copy_is_not_used(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    shutil.copytree(runs / "lora-0.001-s1", run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    kept = record_instance_scores(run_dir, metrics)  # what evaluation does before writing metrics.json
    assert kept.values[1].mean() == pytest.approx(metrics["overall"]["rougeL"], abs=1e-4)
    again = read_run_scores(run_dir, metrics)
    assert again.ids == kept.ids and (again.values == kept.values).all()
    assert not (tmp_path / "cache" / "instance-scores").exists()  # read from the run, nothing scored again
    # Predictions changed after the evaluation: the kept scores belong to the old file and are not used.
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    wrong = next(k for k, line in enumerate(lines) if kept.values[0][k] == 0)
    record = json.loads(lines[wrong])
    lines[wrong] = json.dumps({**record, "prediction": record["references"][0]})
    (run_dir / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    fresh = read_run_scores(run_dir, metrics)
    assert fresh.values[0][wrong] == fresh.values[1][wrong] == 100.0
    assert (fresh.values[:, :wrong] == kept.values[:, :wrong]).all()


def test_a_kept_file_without_its_key_or_not_an_object_is_not_used(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    shutil.copytree(runs / "lora-0.001-s1", run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    right = record_instance_scores(run_dir, metrics)
    entry = json.loads((run_dir / "instance_scores.json").read_text())
    del entry["key"]
    entry["values"] = [[0.0] * len(entry["ids"])] * 2  # wrong scores, no key: must not be trusted
    for content in (json.dumps(entry), "null", "[]"):
        (run_dir / "instance_scores.json").write_text(content)
        scores = read_run_scores(run_dir, metrics)
        assert (scores.values == right.values).all()


def test_keeping_the_scores_never_fails_an_evaluation(runs, tmp_path, caplog):
    run_dir = tmp_path / "run"
    shutil.copytree(runs / "lora-0.001-s1", run_dir)
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    (run_dir / "predictions.jsonl").write_text("\n".join([lines[0], lines[0], *lines[1:]]) + "\n")  # a duplicate id
    assert record_instance_scores(run_dir, {}) is None
    assert not (run_dir / "instance_scores.json").exists()
    assert "per-instance scores not kept" in caplog.text


def test_a_real_difference_is_called_real_and_an_equal_pair_is_not(report):
    files = report
    rows = {(r["first"], r["second"]): r for r in _rows(files.differences_csv)}
    assert len(rows) == 3  # every pair of the 3 methods' best configurations
    equal = rows.get(("full", "lora")) or rows[("lora", "full")]
    assert equal["verdict"] == f"no difference larger than {float(equal['rougeL detectable']):.2f} detected"
    assert float(equal["rougeL p holm"]) > 0.05 and float(equal["rougeL detectable"]) > abs(
        float(equal["rougeL difference"])
    )
    assert float(equal["rougeL 95% low"]) < 0 < float(equal["rougeL 95% high"])
    for better in ("full", "lora"):
        row = rows[(better, "prompt")]
        assert row["verdict"] == f"{better} > prompt" and float(row["rougeL p holm"]) <= 0.05
        assert float(row["rougeL 95% low"]) > 0
    assert rows[("full", "prompt")]["first configuration"] == "lr=0.001"
    # The difference is that of the two configurations' reported means (same instances, mean over seeds).
    means = {
        r["method"]: float(r["test ROUGE-L"].split(" ± ")[0])
        for r in _rows(files.configurations_csv)
        if r["best"] == "yes"
    }
    assert float(rows[("full", "prompt")]["rougeL difference"]) == pytest.approx(
        means["full"] - means["prompt"], abs=0.01
    )
    # Holm over one family: 3 pairs x 2 metrics; the smallest p is multiplied by 6
    p = [float(r[f"{m} p"]) for r in rows.values() for m in ("rougeL", "exact_match")]
    holm = sorted(float(r[f"{m} p holm"]) for r in rows.values() for m in ("rougeL", "exact_match"))
    assert holm[0] == pytest.approx(min(1.0, 6 * min(p)), rel=1e-4)


def test_tables_plots_and_page_show_the_intervals(report):
    files = report
    text = files.markdown.read_text()
    assert "## Which differences are real" in text and "Holm" in text and "| full − prompt |" in text
    assert "95% CI" in files.summary and "95% CI: t interval over test tasks and training seeds" in text
    assert "one t procedure over test tasks and training seeds" in text and "80% power" in text
    assert "Which differences are real" in files.html.read_text()
    categories = _rows(files.categories_csv)
    assert {(r["method"], r["category"]) for r in categories} == {
        (m, c) for m in ("full", "lora", "prompt") for c in ("Sentiment Analysis", "Text Copying")
    }
    for r in categories:
        assert float(r["ROUGE-L 95% low"]) <= float(r["ROUGE-L"]) <= float(r["ROUGE-L 95% high"])
        assert r["test tasks"] == "5"
    assert {p.name for p in files.plots} >= {"report.png", "report_categories.png"}


def test_the_report_is_deterministic(study, report):
    configs = configurations(collect_runs(study), study)
    chosen, _ = selection(configs)
    assert differences_csv_rows(analyse(configs, chosen, study)) == _csv_table(report.differences_csv)


@pytest.mark.parametrize("off", [{"intervals": False}, {"bootstrap": 0}])  # bootstrap=0: scripts from before
def test_no_intervals_turns_them_off_and_removes_stale_files(runs, tmp_path, off):
    out = tmp_path / "out"
    write_report(runs, out)
    files = write_report(runs, out, **off)
    assert files.differences_csv is None and not (out / "report_differences.csv").exists()
    assert not (out / "report_categories.csv").exists()
    text = files.markdown.read_text()
    assert "--no-intervals" in text and "95% CI" not in text
    assert all(r["ROUGE-L 95% low"] == "" for r in _rows(files.configurations_csv))


def test_one_method_on_one_task_still_reports(tmp_path):
    root = tmp_path / "runs"
    one = dict(list(TASKS.items())[:1])
    for seed in (1, 2):
        _run(root, "lora", seed, 0.6, tasks=one, instances=8)
    files = write_report(root, tmp_path / "out")
    assert "Only one method was run" in files.markdown.read_text()
    assert files.differences_csv is None
    row = _rows(files.configurations_csv)[0]  # no spread over tasks to be had from one task: no interval, said
    assert (
        row["test tasks"] == ""
        and row["ROUGE-L 95% low"] == ""
        and "one test task, no interval" in (files.markdown.read_text())
    )


def test_runs_without_predictions_are_said_and_the_rest_still_has_intervals(runs, tmp_path):
    for run_dir in runs.glob("prompt-*"):
        (run_dir / "predictions.jsonl").unlink()
    files = write_report(runs, tmp_path / "out")
    text = files.markdown.read_text()
    assert "1 of 4 configurations have a run without predictions.jsonl" in text and "prompt · tiny-t5 lr=0.3" in text
    assert any("1 of 4 configurations have a run without predictions.jsonl" in n for n in files.notes)  # printed
    rows = _rows(files.differences_csv)
    assert [(r["first"], r["second"]) for r in rows] in ([("full", "lora")], [("lora", "full")])


def test_cli_flags_and_a_negative_count(runs, tmp_path, capsys):
    assert main(["report", str(runs), "-o", str(tmp_path / "out"), "--bootstrap", "200", "--seed", "3"]) == 0  # old
    assert main(["report", str(runs), "--output-dir", str(tmp_path / "off"), "--no-intervals"]) == 0  # as demo's
    assert (tmp_path / "off" / "report.md").is_file() and not (tmp_path / "off" / "report_differences.csv").exists()
    out = capsys.readouterr().out
    assert "which differences are real" in out and "report_differences.csv" in out
    assert "report_categories.csv" in out
    assert main(["report", str(runs), "--bootstrap", "-5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("peftbench: error: ") and "\n" not in err and "--bootstrap" in err


def test_seed_variance_widens_a_configurations_interval(tmp_path):
    """Two configurations with the same seed-averaged predictions: one whose seeds agree, one whose seeds differ by
    a lot. The interval of the second must be wider (the earlier report averaged seeds first: equal intervals)."""
    root = tmp_path / "runs"
    for seed in (1, 2, 3):
        _run(root, "full", seed, 0.6, val=40)
    for seed, quality in ((1, 0.35), (2, 0.6), (3, 0.85)):
        _run(root, "lora", seed, quality, val=39)
    files = write_report(root, tmp_path / "out")
    rows = {r["method"]: r for r in _rows(files.configurations_csv)}
    width = {m: float(r["ROUGE-L 95% high"]) - float(r["ROUGE-L 95% low"]) for m, r in rows.items()}
    assert width["lora"] > 1.5 * width["full"], width
    for method, row in rows.items():  # the centre is the mean over seeds of the runs' overall scores
        scores = [
            json.loads((root / f"{method}-0.001-s{s}" / "metrics.json").read_text())["overall"]["rougeL"]
            for s in (1, 2, 3)
        ]
        assert row["test ROUGE-L"].startswith(f"{statistics.fmean(scores):.2f}")


def test_one_seed_is_said_not_to_cover_seed_variance(tmp_path):
    root = tmp_path / "runs"
    _run(root, "full", 1, 0.8, val=40)
    _run(root, "prompt", 1, 0.25, val=10)
    files = write_report(root, tmp_path / "out")
    text = files.markdown.read_text()
    assert "not training-seed variance" in text and "Some configurations have one seed" in text
    (row,) = _rows(files.differences_csv)
    assert row["seeds covered"] == "no"


def test_methods_scored_on_different_instances_are_compared_on_the_common_ones(tmp_path):
    root = tmp_path / "runs"
    for seed in (1, 2):
        _run(root, "full", seed, 0.8, val=40)
        _run(root, "prompt", seed, 0.25, val=10, instances=9)  # 9 of the 12 instances of every task
    files = write_report(root, tmp_path / "out")
    (row,) = _rows(files.differences_csv)
    assert (row["first"], row["second"], row["tasks"], row["instances"]) == ("full", "prompt", "10", "90")
    assert row["verdict"] == "full > prompt"
    assert "full vs prompt (tiny-t5): compared on the 90 test instances both have" in files.markdown.read_text()
    sizes = {r["method"]: r["test instances"] for r in _rows(files.configurations_csv)}
    assert sizes == {"full": "120", "prompt": "90"}


def test_runs_from_before_predictions_report_as_before(runs, tmp_path):
    for path in runs.rglob("predictions.jsonl"):
        path.unlink()
    files = write_report(runs, tmp_path / "out")
    text = files.markdown.read_text()
    assert "Only 0 of 3 methods have predictions for their best configuration" in text
    assert "95% CI" not in text and files.differences_csv is None and files.categories_csv is None
    assert "4 of 4 configurations have a run without predictions.jsonl" in text


def test_few_tasks_are_said_and_only_large_differences_show(tmp_path):
    root = tmp_path / "runs"
    three = dict(list(TASKS.items())[:3])
    _run(root, "full", 1, 0.9, tasks=three)
    _run(root, "prompt", 1, 0.1, tasks=three)
    files = write_report(root, tmp_path / "out")
    (row,) = _rows(files.differences_csv)
    # a t test over 3 tasks (2 degrees of freedom, one seed): only a difference as large as this one shows
    assert row["verdict"] == "full > prompt" and float(row["rougeL df"]) == 2
    assert float(row["rougeL detectable"]) > 4 * float(row["rougeL se"])
    assert "With 3 tasks the t reference has few degrees of freedom" in files.markdown.read_text()


def test_choosing_on_test_is_flagged_where_there_was_a_choice(runs, tmp_path):
    for path in runs.rglob("metrics.json"):
        metrics = json.loads(path.read_text())
        metrics["train"]["validation"] = []
        path.write_text(json.dumps(metrics))
    report = write_report(runs, tmp_path / "a")
    assert "chosen on the test tasks, so these comparisons are optimistic" in report.markdown.read_text()
    for run_dir in runs.glob("lora-0.0001-*"):  # one configuration per method: nothing was chosen
        shutil.rmtree(run_dir)
    report = write_report(runs, tmp_path / "b")
    assert "optimistic" not in report.markdown.read_text()


def test_a_copied_run_counts_once_and_a_damaged_one_is_said(tmp_path, capsys):
    """A copy of a run directory (same config hash and seed) is the same run, not another training seed: counted
    twice it would hide "one seed" and narrow the intervals. A run with a torn metrics.json is not dropped silently."""
    root = tmp_path / "runs"
    _run(root, "full", 1, 0.8, val=40)
    _run(root, "prompt", 1, 0.25, val=10)
    shutil.copytree(root / "full-0.001-s1", root / "copies" / "full-0.001-s1")
    torn = _run(root, "lora", 1, 0.5, val=20) / "metrics.json"
    torn.write_text(torn.read_text()[:100])
    # the demo's untrained base is evaluated with full fine-tuning's config and seed: another run, not a copy
    base = shutil.copytree(root / "full-0.001-s1", root / "untrained")
    untrained = {**json.loads((base / "metrics.json").read_text()), "method": "untrained", "trainable_params": 0}
    (base / "metrics.json").write_text(json.dumps(untrained))
    assert main(["report", str(root), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    text = (tmp_path / "out" / "report.md").read_text()
    assert "2 configurations, 1 seed(s) each." in text and "Some configurations have one seed" in text
    assert (
        "copies/full-0.001-s1: the config and seed of full-0.001-s1 (run again or copied): listed, counted once" in text
    )
    assert text.split("## Runs")[1].count("| full |") == 2  # listed, but one seed in the statistics (above)
    assert "lora-0.001-s1: metrics.json is damaged (" in text and "`peftbench evaluate` writes it again" in text
    assert "is damaged (" not in text.split("lora-0.001-s1: metrics.json is damaged (", 1)[1].split("\n", 1)[0]
    assert out.count("not counted: ") == 2 and "not counted: lora-0.001-s1: metrics.json is damaged" in out
    assert "| untrained |" in text.split("## Runs")[1]
    assert "note: configurations with one seed" in out  # what the intervals do not cover, on the terminal too
    assert "Not counted in the statistics" in (tmp_path / "out" / "report.html").read_text()


def test_runs_on_two_test_sets_are_never_selected_or_compared_together(tmp_path):
    """The same methods on two datasets under one directory: each test set gets its own best configuration per
    method and its own comparisons (scores on different test sets say nothing about each other)."""
    root = tmp_path / "runs"
    other = {name.replace("task", "other"): category for name, category in TASKS.items()}
    for seed in (1, 2):
        _run(root, "full", seed, 0.8, val=40, data="mini")
        _run(root, "prompt", seed, 0.25, val=10, data="mini")
        _run(root, "full", seed, 0.3, val=45, data="big", tasks=other)  # better on validation, worse on test
        _run(root, "prompt", seed, 0.9, val=5, data="big", tasks=other)
    files = write_report(root, tmp_path / "out")
    pairs = {(r["model"], r["first"], r["second"], r["verdict"]) for r in _rows(files.differences_csv)}
    assert pairs == {
        ("tiny-t5 · mini/default", "full", "prompt", "full > prompt"),
        ("tiny-t5 · big/default", "prompt", "full", "prompt > full"),
    }, pairs
    best = files.summary
    assert best.count("| tiny-t5 · mini/default |") == 2 and best.count("| tiny-t5 · big/default |") == 2, best
    # the same test tasks from a directory of another name (a copy of the data elsewhere): the same test set
    _run(root, "lora", 1, 0.5, val=20, data="mirror")
    runs = collect_runs(root)
    annotate_models(runs, root)
    assert {m["_model"] for m in runs} == {"tiny-t5 · mini/default", "tiny-t5 · big/default"}


def test_configurations_that_would_read_the_same_say_what_differs(tmp_path):
    root = tmp_path / "runs"
    for seed in (1, 2):
        _run(root, "lora", seed, 0.3, val=20, steps=4)
        _run(root, "lora", seed, 0.7, val=30, steps=200)
        _run(root, "full", seed, 0.7, val=30)
    files = write_report(root, tmp_path / "out")
    labels = sorted(r["configuration"] for r in _rows(files.configurations_csv) if r["method"] == "lora")
    assert labels == ["lr=0.001 max_steps=200", "lr=0.001 max_steps=4"], labels
    assert [r["configuration"] for r in _rows(files.configurations_csv) if r["method"] == "full"] == ["lr=0.001"]
    from peftbench.reporting.analysis import _short

    assert (
        _short("data.seed", ["data.seed"]) == "data.seed"
        and _short("train.max_steps", ["train.max_steps"]) == "max_steps"
    )
    assert _short("model.dtype", ["model.dtype", "eval.dtype"]) == "model.dtype"


def test_the_configurations_csv_has_plain_numbers_beside_mean_and_std(report, study):
    for row in _rows(report.configurations_csv):
        lr = 1e-3 if row["configuration"] == "lr=0.001" else float(row["configuration"].removeprefix("lr="))
        runs = [json.loads((study / f"{row['method']}-{lr:g}-s{s}" / "metrics.json").read_text()) for s in (1, 2)]
        scores = [m["overall"]["rougeL"] for m in runs]
        assert float(row["test ROUGE-L mean"]) == pytest.approx(statistics.fmean(scores), abs=1e-4)
        assert float(row["test ROUGE-L std"]) == pytest.approx(statistics.stdev(scores), abs=1e-4)
        assert row["test ROUGE-L"].startswith(f"{statistics.fmean(scores):.2f}")
        assert float(row["validation ROUGE-L mean"]) == runs[0]["train"]["validation"][-1][1]


def test_plots_label_log_axes_with_plain_numbers_and_keep_bars_above_zero():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from peftbench.reporting.plots import _bars, _plain_log_formatter

    assert _bars(1.0, None, 3.0) == (1.0, 3.0) and _bars(5.0, None, 3.0) == (3.0, 3.0)  # ± std cut at 0
    fig, ax = plt.subplots()
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 3e-3)
    ax.xaxis.set_major_formatter(_plain_log_formatter())
    ax.xaxis.set_minor_formatter(_plain_log_formatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    fig.canvas.draw()
    labels = {t.get_text() for t in [*ax.get_xticklabels(), *ax.get_xticklabels(minor=True)]} - {""}
    plt.close(fig)
    assert {"0.001", "0.002", "0.003"} <= labels and not any("10^" in t or "e-" in t for t in labels), labels
