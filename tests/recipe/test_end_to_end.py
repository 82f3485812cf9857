"""End to end through the command line on the shared SuperNI sample with tiny models: two training runs in
their own processes (the same numbers from two processes), the other commands through ``cli.main`` in-process."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from peftbench.configure import load_config
from peftbench.io import load_tensors
from tests.conftest import in_process, require_superni_mini, run_cli, tiny_mini_config

# Slow (training runs through the CLI); one xdist group, so that the module's runs are made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("end_to_end")]

RUN_FILES = {
    "config.yaml",
    "train.log",
    "trainable.safetensors",
    "predictions.jsonl",
    "metrics.json",
    "instance_scores.json",
}


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """`peftbench train` twice with the same config (T5 + LoRA) and once decoder-only (LLaMA + adapter)."""
    data_dir = require_superni_mini()
    root = tmp_path_factory.mktemp("e2e")
    out = {}
    for name, model, method, launch in [
        ("a", "tiny-t5", "lora", run_cli),  # a and b: two processes, the same numbers
        ("b", "tiny-t5", "lora", run_cli),
        ("c", "tiny-llama", "adapter_houlsby", in_process),
    ]:
        cfg_path = root / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(tiny_mini_config(data_dir, root / name / "runs", model, method)))
        # c's config asks for 8 processes (as the study's does); `peftbench train` in one process trains with 1
        extra = ["launch.num_processes=8"] if name == "c" else []
        proc = launch("train", str(cfg_path), "train.learning_rate=1e-3", *extra, "--no-progress")
        assert proc.returncode == 0, proc.stderr[-3000:]
        (run_dir,) = (root / name / "runs").iterdir()
        out[name] = (run_dir, proc)
    return root, out


def test_run_directory_is_complete(trained_runs):
    _, runs = trained_runs
    for run_dir, _ in runs.values():
        assert {p.name for p in run_dir.iterdir()} >= RUN_FILES
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "finished"
        assert metrics["overall"]["num_examples"] == 12  # 12 test tasks x 1 instance
        assert set(metrics["per_category"]) and set(metrics["per_task"])
        assert len(metrics["per_task"]) == 12
        assert 0 < metrics["trainable_params"] < metrics["total_params"]
        assert metrics["train"]["steps"] == 3 and metrics["train_time_s"] > 0 and metrics["peak_memory_mb"] > 0
        # a tiny run is not the study's protocol, and says where it differs
        assert metrics["protocol"]["follows_study"] is False
        assert metrics["protocol"]["differences"]["data.max_source_length"]["study"] == 1024
        # the effective batch of the processes that trained (per-device 4 x accumulation 1 x 1), not the config's
        assert metrics["train"]["processes"] == 1
        assert metrics["protocol"]["differences"]["effective batch"] == {"run": 4, "study": 16}
        lines = (run_dir / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == 12 and len({json.loads(x)["id"] for x in lines}) == 12
        kept = json.loads((run_dir / "instance_scores.json").read_text())  # per instance, for the report
        assert kept["ids"] == [json.loads(x)["id"] for x in lines]
        for k, name in enumerate(("exact_match", "rougeL")):
            assert sum(kept["values"][k]) / 12 == pytest.approx(metrics["overall"][name], abs=1e-4)
        for line in lines:  # only the continuation: a decoder-only model's prompt is cut off
            prediction = json.loads(line)["prediction"]
            assert "Definition:" not in prediction and "Now complete the following example" not in prediction
        saved = load_tensors(run_dir / "trainable.safetensors")
        assert sum(t.numel() for t in saved.values()) == metrics["trainable_params"]  # method weights only
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["train"]["learning_rate"] == pytest.approx(1e-3)  # the override is recorded
        # base.json: the weights the run trained on, hashed independently of peftbench's setup
        from peftbench.models import load_model, load_tokenizer
        from peftbench.trained import weights_hash

        cfg = load_config(run_dir / "config.yaml")
        base = load_model(cfg.model, vocab_size=len(load_tokenizer(cfg.model)))
        assert json.loads((run_dir / "base.json").read_text()) == {
            "name": cfg.model.name, "dtype": "float32", "sha256": weights_hash(base),
        }  # fmt: skip


def test_same_config_gives_same_weights_and_numbers(trained_runs):
    _, runs = trained_runs
    (a, _), (b, _) = runs["a"], runs["b"]
    wa, wb = load_tensors(a / "trainable.safetensors"), load_tensors(b / "trainable.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for key in ("overall", "per_task", "per_category", "trainable_params"):
        assert ma[key] == mb[key]
    assert (a / "predictions.jsonl").read_text() == (b / "predictions.jsonl").read_text()
    assert [loss for _, loss in ma["train"]["losses"]] == [loss for _, loss in mb["train"]["losses"]]


def test_evaluate_and_score_reproduce_the_metrics(trained_runs):
    _, runs = trained_runs
    run_dir, _ = runs["c"]
    before = json.loads((run_dir / "metrics.json").read_text())
    proc = in_process("evaluate", str(run_dir), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = json.loads((run_dir / "metrics.json").read_text())
    assert after["overall"] == before["overall"] and after["per_task"] == before["per_task"]
    assert after["train"] == before["train"]  # training facts survive re-evaluation
    proc = in_process("score", str(run_dir / "predictions.jsonl"), "-o", str(run_dir / "rescored.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = json.loads(proc.stdout)
    assert scored["overall"] == before["overall"] and scored["per_category"] == before["per_category"]
    assert json.loads((run_dir / "rescored.json").read_text()) == scored


def test_rerunning_a_finished_run_does_nothing(trained_runs):
    root, runs = trained_runs
    run_dir, _ = runs["a"]
    mtime = (run_dir / "trainable.safetensors").stat().st_mtime_ns
    proc = in_process("train", str(root / "a.yaml"), "train.learning_rate=1e-3", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already finished" in proc.stdout + proc.stderr
    assert (run_dir / "trainable.safetensors").stat().st_mtime_ns == mtime


def test_report_renders_every_run(trained_runs):
    root, _ = trained_runs
    proc = in_process("report", str(root), "-o", str(root / "report"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (root / "report" / "report.md").read_text()
    runs = md.split("## Runs")[1]
    # a and b are one config and seed run twice (the same numbers): both listed, one seed in the statistics
    assert runs.count("| lora |") == 2 and runs.count("| adapter_houlsby |") == 1
    assert "the config and seed of" in runs and "counted once" in runs and "not counted: " in proc.stdout
    configurations = md.split("## All configurations")[1].split("## Runs")[0]
    assert "2 configurations, 1 seed(s) each." in configurations
    best = md.split("## Best configuration per method")[1].split("## All configurations")[0]
    assert best.count("| lora |") == 1 and best.count("| adapter_houlsby |") == 1  # one row per method
    csv_lines = (root / "report" / "report.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("run,method,model,seed,hyperparameters,trainable params")
    png = (root / "report" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_a_config_edited_after_training_is_refused_in_one_line(trained_runs, tmp_path):
    """evaluate and export read config.yaml again: edited method settings would score or ship another
    model than the one trained (a changed alpha silently; a changed r with a traceback), so both refuse in one line;
    weights saved before the key was recorded are checked by their shapes."""
    import shutil

    from peftbench.io import file_sha256, save_tensors, tensor_metadata

    _, runs = trained_runs
    for key, value in (("alpha", 3), ("r", 2)):
        run_dir = shutil.copytree(runs["a"][0], tmp_path / key)
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["method"][key] = value
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        for args in (("evaluate", str(run_dir)), ("export", str(run_dir), str(tmp_path / f"{key}-export"))):
            proc = in_process(*args)
            assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr[-2000:]
            assert "was trained with other method settings" in proc.stderr and f"{key}: " in proc.stderr
    # what may change: eval settings, and an option added to the method since (recorded without it, at its default)
    run_dir = shutil.copytree(runs["a"][0], tmp_path / "fine")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["eval"]["batch_size"] = 3
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    weights = run_dir / "trainable.safetensors"
    metadata = tensor_metadata(weights)
    options = {k: v for k, v in json.loads(metadata["method_options"]).items() if k != "dropout"}
    save_tensors(load_tensors(weights), weights, metadata={**metadata, "method_options": json.dumps(options)})
    state = json.loads((run_dir / "run_state.json").read_text())
    (run_dir / "run_state.json").write_text(json.dumps({**state, "weights_sha256": file_sha256(weights)}))
    proc = in_process("evaluate", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    # weights from before the options were recorded (none in their metadata): the shapes still give it away
    run_dir = tmp_path / "r"
    weights = run_dir / "trainable.safetensors"
    save_tensors(load_tensors(weights), weights, metadata={"method": "lora"})
    state = json.loads((run_dir / "run_state.json").read_text())
    (run_dir / "run_state.json").write_text(json.dumps({**state, "weights_sha256": file_sha256(weights)}))
    proc = in_process("evaluate", str(run_dir))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr[-2000:]
    assert "has shape" in proc.stderr and "was the config changed after training?" in proc.stderr
