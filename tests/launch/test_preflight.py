"""Checks before processes start (issue 17, item 1): `peftbench run METHOD --mode full` on a machine without the
preset's 8 GPUs, missing data or model: one line, exit 2, no process started."""

from __future__ import annotations

import shutil

import pytest
import yaml

from peftbench.errors import PeftbenchError
from peftbench.launch.preflight import data_problem, device_problem, preflight
from peftbench.launch.presets import preset_config


@pytest.fixture
def no_launch(monkeypatch):
    """This CPU machine, whatever the test runs on: no GPU; any process start fails the test."""
    import subprocess

    import torch

    def started(*args, **kwargs):
        raise AssertionError(f"a process was started: {args[0] if args else kwargs}")

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(subprocess, "call", started)
    monkeypatch.setattr(subprocess, "Popen", started)


def _one_line_user_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("peftbench: error: nothing was started: ")
    return line


def test_full_preset_on_a_machine_without_8_gpus(cli, no_launch, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _one_line_user_error(cli("run", "lora", "--mode", "full", "--no-progress"))
    assert "launch.num_processes=8 starts one process per GPU, but this machine has no GPU" in line
    assert "e.g. launch.num_processes=1" in line
    assert "data/natural-instructions: SuperNI data directory does not exist" in line  # every problem at once
    assert "cannot load model 'google/t5-xl-lm-adapt'" in line
    assert not any(tmp_path.iterdir())  # no run directory either


def test_only_the_devices_when_data_and_model_are_in_place(cli, no_launch, tmp_path, monkeypatch, superni_mini):
    from transformers import T5Config

    model_dir = tmp_path / "t5"
    T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, feed_forward_proj="gated-gelu").save_pretrained(
        model_dir
    )
    monkeypatch.chdir(tmp_path)
    args = [
        "run",
        "lora",
        "--mode",
        "full",
        f"model.name={model_dir}",
        f"data.data_dir={superni_mini}",
        "data.split=mini",
    ]
    line = _one_line_user_error(cli(*args))
    assert line.endswith("override it, e.g. launch.num_processes=1 (or launch.gpus_per_process=0 "
                         "launch.accelerate_config=null for CPU processes under torchrun)")  # fmt: skip


def test_device_counts():
    cfg = preset_config("lora", "full")
    assert "only 4 GPUs: override it, e.g. launch.num_processes=4" in device_problem(cfg, gpus=4)
    assert "only 1 GPU:" in device_problem(cfg, gpus=1)
    assert device_problem(cfg, gpus=8) is None
    assert device_problem(preset_config("lora", "full", ["launch.num_processes=1"]), gpus=0) is None
    assert device_problem(preset_config("lora", "full", ["launch.gpus_per_process=0"]), gpus=0) is None


def test_data_problems_name_the_file(tmp_path, superni_mini):
    data = tmp_path / "data"
    shutil.copytree(superni_mini, data)
    cfg = preset_config("lora", "dev", [f"data.data_dir={data}", "data.split=mini"])
    assert data_problem(cfg) is None
    missing = sorted((data / "tasks").glob("*.json"))[0]
    missing.unlink()
    assert f"have no file in {data / 'tasks'}: {missing.stem}" in data_problem(cfg)
    assert "split 'nope' not found" in data_problem(preset_config("lora", "dev", [f"data.data_dir={data}",
                                                                                 "data.split=nope"]))  # fmt: skip
    assert data_problem(preset_config("lora", "dev")) is None  # '@demo' is generated on first use
    with pytest.raises(PeftbenchError, match=r"^nothing was started: .*split 'nope' not found"):
        preflight([preset_config("lora", "dev", [f"data.data_dir={data}", "data.split=nope"])])


def test_a_local_sweep_checks_before_starting_a_run(cli, no_launch, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"mode": "full", "methods": {"lora": {"method.r": [8, 16]}},
                                     "overrides": {"output_dir": str(tmp_path / "runs")}}))  # fmt: skip
    line = _one_line_user_error(cli("sweep", str(sweep), "--no-progress"))
    assert "launch.num_processes=8" in line and line.count("launch.num_processes=8") == 1  # once, not per run
    assert not (tmp_path / "runs").exists()


def test_memory_is_planned_against_the_gpu_before_anything_starts(cli, no_launch, tmp_path):
    """A launch whose planned per-device peak (peftbench.memory.plan, on fake weights) exceeds --gpu-memory is
    refused in one line with what would fit; one that fits starts as before. Planned once per memory shape."""
    from peftbench.launch.preflight import memory_problem
    from peftbench.memory.figures import parse_bytes
    from peftbench.memory.plan import plan_memory

    cfg = preset_config("full", "dev", [f"output_dir={tmp_path / 'runs'}", "launch.gpus_per_process=1"])
    peak = plan_memory(cfg).peak_bytes
    assert memory_problem(cfg, 2 * peak) is None
    problem = memory_problem(cfg, peak // 2)
    assert problem and "\n" not in problem and "would fit" in problem and "full on tiny-t5" in problem, problem
    with pytest.raises(PeftbenchError, match="nothing was started: full on tiny-t5"):
        preflight([cfg, cfg], gpu_memory=peak // 2)
    preflight([cfg], gpu_memory=2 * peak)

    # through the command line: `peftbench run` and a local sweep, refused before a run directory exists
    line = _one_line_user_error(
        cli(
            "run",
            "full",
            "--mode",
            "dev",
            "--gpu-memory",
            f"{peak // 2}B",
            f"output_dir={tmp_path / 'runs'}",
            "launch.gpus_per_process=1",
        )
    )
    assert "would fit" in line
    sweep = tmp_path / "sweep.yaml"
    overrides = {"output_dir": str(tmp_path / "runs"), "launch.gpus_per_process": 1}
    sweep.write_text(yaml.safe_dump({"mode": "dev", "methods": {"full": {}, "lora": {}}, "overrides": overrides}))
    line = _one_line_user_error(cli("sweep", str(sweep), "--gpu-memory", f"{peak // 2}B", "--no-progress"))
    assert "full on tiny-t5" in line
    assert not (tmp_path / "runs").exists()
    assert parse_bytes("80GiB") == 80 * 2**30 and parse_bytes("1.5GB") == 1_500_000_000
