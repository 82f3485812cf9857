"""The test split is scored with the best validation weights (the study loads the best checkpoint before
testing), validation runs at every epoch's end as well as every ``eval_steps``, and the choice is recorded.

The validation scores are scripted (a tiny random model scores 0 on every validation task, so a real scorer
could not tell checkpoints apart); everything else is the real run: training, ``best/`` on disk, the
weights written for the test, ``metrics.json`` and the report.
"""

from __future__ import annotations

import json

import pytest
import torch

import peftbench.recipe.run as run_module
from peftbench.configure import config_from_dict
from peftbench.io import load_tensors
from peftbench.reporting.build import write_report
from tests.conftest import tiny_mini_config

SCRIPT = [5.0, 2.0, 7.0]
"""Validation ROUGE-L of the 1st, 2nd, 3rd validation (the first epoch's end is the best of two epochs)."""


def _run(superni_mini, tmp_path, monkeypatch, **overrides):
    calls: list[int] = []

    def scripted(cfg, tokenizer, features, device, *, shard=True):
        if not features or cfg.train.eval_steps <= 0:
            return None

        def score(model) -> float:
            calls.append(len(calls))
            return SCRIPT[len(calls) - 1]

        return score

    monkeypatch.setattr(run_module, "validation_scorer", scripted)
    raw = tiny_mini_config(superni_mini, tmp_path / "runs", run_name="run")
    raw["data"].update(num_validation_tasks=2, max_train_instances_per_task=2)
    raw["train"] = {"num_epochs": 2, "per_device_batch_size": 4, "eval_steps": 1000, "save_steps": 0,
                    "learning_rate": 1e-2}  # fmt: skip
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    result = run_module.run_experiment(config_from_dict(raw), progress=False, quiet=True)
    return result.run_dir, result.metrics


def test_test_split_is_scored_with_the_best_validation_weights(superni_mini, tmp_path, monkeypatch):
    run_dir, metrics = _run(superni_mini, tmp_path, monkeypatch)
    epoch = -(-metrics["data"]["train_instances"] // 4)
    validation = metrics["train"]["validation"]
    assert [s for s, _ in validation] == [epoch, 2 * epoch], "validation at each epoch's end (eval_steps=1000)"
    assert [v for _, v in validation] == SCRIPT[:2]
    weights = metrics["weights"]
    assert weights["used"] == "best" and weights["step"] == epoch and weights["last_step"] == 2 * epoch
    assert weights["validation_rougeL"] == 5.0 and "best validation weights" in weights["note"]

    best = load_tensors(run_dir / "best" / f"step-{epoch:08d}" / "trainable.safetensors")
    tested = load_tensors(run_dir / "trainable.safetensors")
    last = load_tensors(run_dir / "last.safetensors")
    assert best.keys() == tested.keys() == last.keys()
    assert all(torch.equal(best[k], tested[k]) for k in best)
    assert any(not torch.equal(best[k], last[k]) for k in best), "training after the best step changed nothing"
    assert sorted(p.name for p in (run_dir / "best").iterdir()) == [f"step-{epoch:08d}"]

    # Re-evaluation (peftbench evaluate) scores the same weights and keeps the record.
    again = run_module.evaluate_run(run_dir, progress=False, quiet=True).metrics
    assert again["overall"] == metrics["overall"] and again["weights"] == weights

    # The report names the weights the test was scored with.
    write_report(run_dir.parent, tmp_path / "report")
    assert f"best@{epoch} (val 5.00)" in (tmp_path / "report" / "report.md").read_text()


def test_eval_weights_last_scores_the_last_weights(superni_mini, tmp_path, monkeypatch):
    run_dir, metrics = _run(superni_mini, tmp_path, monkeypatch, eval={"weights": "last"})
    steps = metrics["train"]["steps"]
    assert metrics["weights"] == {
        "used": "last", "step": steps, "validation_rougeL": 2.0, "last_step": steps,
        "note": f"test scored with the last weights (step {steps}; eval.weights=last)",
    }  # fmt: skip
    assert not (run_dir / "last.safetensors").exists()  # trainable.safetensors is the last weights


def test_without_validation_the_last_weights_are_used_and_said(superni_mini, tmp_path, monkeypatch):
    run_dir, metrics = _run(superni_mini, tmp_path, monkeypatch, data={"num_validation_tasks": 0})
    assert metrics["train"]["validation"] == [] and metrics["weights"]["used"] == "last"
    assert metrics["weights"]["note"].startswith("no validation tasks")
    assert "no validation tasks" in (run_dir / "train.log").read_text()


def test_damaged_best_weights_are_refused_in_one_line(superni_mini, tmp_path, monkeypatch):
    from peftbench.errors import PeftbenchError
    from peftbench.training.checkpoint import load_best, save_best

    save_best(tmp_path, 4, 1.5, "rougeL", {"w": torch.ones(3)})
    tensors, score = load_best(tmp_path, 4)
    assert score == 1.5 and torch.equal(tensors["w"], torch.ones(3))
    path = tmp_path / "best" / "step-00000004" / "trainable.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(PeftbenchError, match="SHA-256") as err:
        load_best(tmp_path, 4)
    assert "\n" not in str(err.value)
    with pytest.raises(PeftbenchError, match="step 7"):
        load_best(tmp_path, 7)
    assert json.loads((path.parent / "best.json").read_text())["step"] == 4
