"""One denominator for the trainable share (issue 17, item 4): the base model's parameters, in `peftbench
methods`, a run's metrics.json and headline, and the report, also for runs recorded before ``base_params``."""

from __future__ import annotations

import csv
import json
import re

import yaml

from peftbench.recipe.runfiles import base_params, trainable_percent
from tests.conftest import tiny_mini_config


def test_methods_a_run_and_the_report_agree(cli, tmp_path, superni_mini):
    listed = cli("methods", "--model", "tiny-t5")
    assert listed.returncode == 0, listed.stderr
    block = listed.stdout.split("\nlora: ", 1)[1]
    trainable, percent, base = re.search(
        r"on tiny-t5: ([\d,]+) trainable \(([\d.]+)% of the base model's ([\d,]+)\)", block
    ).groups()
    trainable, base = int(trainable.replace(",", "")), int(base.replace(",", ""))

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_mini_config(superni_mini, tmp_path / "runs", train={"max_steps": 1})))
    run = cli("train", str(config), "--no-progress")
    assert run.returncode == 0, run.stderr
    (metrics_path,) = (tmp_path / "runs").glob("*/metrics.json")
    metrics = json.loads(metrics_path.read_text())
    assert (metrics["trainable_params"], metrics["base_params"]) == (trainable, base)
    assert metrics["total_params"] == base + trainable  # LoRA only adds parameters
    assert f"{metrics['trainable_percent']:.4f}" == percent
    assert f"({percent}% of the base model)" in run.stdout + run.stderr
    assert "train:" not in run.stderr  # --no-progress hides the training bar too (it once showed it regardless)

    report = cli("report", str(tmp_path / "runs"), "--no-intervals")
    assert report.returncode == 0, report.stderr
    with (tmp_path / "runs" / "report.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert f"{float(row['trainable % of base']):.4f}" == percent


def test_runs_recorded_before_base_params():
    lora = {"method": "lora", "trainable_params": 100, "total_params": 10_100, "trainable_percent": 0.990099}
    assert base_params(lora) == 10_000 and trainable_percent(lora) == 1.0
    full = {"method": "full", "trainable_params": 10_000, "total_params": 10_000, "trainable_percent": 100.0}
    assert base_params(full) == 10_000 and trainable_percent(full) == 100.0
    new = {"method": "lora", "trainable_params": 100, "total_params": 10_100, "base_params": 10_000}
    assert trainable_percent(new) == 1.0
    assert trainable_percent({"method": "lora", "trainable_percent": 2.5}) == 2.5  # nothing to recompute from
