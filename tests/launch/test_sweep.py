"""Sweeps: expansion, dry-run plan, the local launcher (finish, skip, pre-empt and resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from peftbench.errors import PeftbenchError
from peftbench.launch.sweep import expand, load_sweep
from peftbench.recipe.runfiles import run_status
from tests.conftest import REPO, in_process
from tests.support.slow import slow_env

SWEEPS = REPO / "configs" / "sweeps"


def _write(tmp_path, **sweep):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"mode": "dev", "overrides": {"output_dir": str(tmp_path / "runs")}, **sweep}))
    return path


def test_expansion_crosses_grid_zips_lists_and_names_runs_stably(tmp_path):
    path = _write(
        tmp_path,
        methods={"lora": {"method.r": [4, 8]}, "prompt": None},
        grid={"seed": [1, 2]},
        zip={"data.num_train_tasks": [4, 8], "train.max_steps": [5, 10]},
    )
    runs = expand(load_sweep(path))
    assert len(runs) == (2 + 1) * 2 * 2
    assert [r.name for r in runs] == [r.name for r in expand(load_sweep(path))]  # deterministic
    assert len({r.name for r in runs}) == len(runs)
    lora = [r for r in runs if r.method == "lora"]
    assert {(r.config.method["r"], r.config.seed, r.config.data.num_train_tasks, r.config.train.max_steps)
            for r in lora} == {(r, s, t, m) for r in (4, 8) for s in (1, 2) for t, m in ((4, 5), (8, 10))}  # fmt: skip
    assert all(r.name.startswith(f"lora-r{r.config.method['r']}-") and "-t" in r.name for r in lora)
    assert all(r.config.output_dir == str(tmp_path / "runs") for r in runs)


def test_alternatives_per_method(tmp_path):
    alternatives = [
        {"method.projection": False},
        {"method.projection": True, "method.projection_hidden_size": [16, 32]},
    ]
    path = _write(tmp_path, methods={"prefix": alternatives})
    runs = expand(load_sweep(path))
    assert [(r.config.method["projection"], r.config.method["projection_hidden_size"]) for r in runs] == [
        (False, 512), (True, 16), (True, 32)]  # fmt: skip


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"methods": {}}, "at least one method"),
        ({"methods": ["lora"], "gird": {}}, "unknown section(s) gird"),
        ({"methods": ["lora"], "mode": "fast"}, "mode must be one of"),
        ({"methods": ["lora"], "zip": {"seed": [1, 2], "train.max_steps": [3]}}, "same length"),
        ({"methods": ["lora"], "grid": {"train.learning_rate": [-1]}}, "learning_rate must be > 0"),
        ({"methods": ["lorra"]}, "no preset for method 'lorra'"),
        ({"methods": {"lora": {"method.r": [8, 8]}}}, "are the same run"),
    ],
)
def test_bad_sweeps_are_one_line(tmp_path, sweep, message):
    with pytest.raises(PeftbenchError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        expand(load_sweep(_write(tmp_path, **sweep)))
    assert "\n" not in str(err.value)


def test_shipped_sweeps_expand():
    dev = expand(load_sweep(SWEEPS / "dev.yaml"))
    assert len(dev) == 8 and {r.config.model.name for r in dev} == {"tiny-t5"}
    study = expand(load_sweep(SWEEPS / "study.yaml"))
    lrs = {r.config.train.learning_rate for r in study}
    assert lrs == {1e-5, 5e-5, 1e-4, 5e-4, 1e-3}
    assert {r.config.seed for r in study} == {1, 2, 3}
    assert {r.config.data.num_train_tasks for r in study} == {8, 32, 64, 128, 256, 512, 707}
    assert {r.config.method["r"] for r in study if r.method == "lora"} == {8, 32, 64, 128, 256, 512}
    assert {r.config.method["num_virtual_tokens"] for r in study if r.method == "prompt"} == {8, 32, 128, 256}
    # 5 learning rates x 3 seeds x 7 task counts, for: full, 6 LoRA ranks, 6 adapter sizes, 4 prompt lengths,
    # 4 prefix variants, and IA3, BitFit, Compacter, parallel adapter
    assert len(study) == 5 * 3 * 7 * (1 + 6 + 6 + 4 + 4 + 4)
    for path in SWEEPS.glob("*.yaml"):
        assert path.read_text().startswith(f"# peftbench sweep configs/sweeps/{path.name}")


def test_dry_run_prints_the_plan_with_sizes(cli, tmp_path):
    path = _write(tmp_path, methods={"lora": {"method.r": [4, 8]}})
    proc = cli("sweep", str(path), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "2 runs (2 new)" in proc.stdout
    assert "12,288" in proc.stdout and "24,576" in proc.stdout  # r (d_in + d_out) x 12 projections
    assert not (tmp_path / "runs").exists()


def test_dry_run_names_what_varies_readably(cli, tmp_path):
    path = _write(tmp_path, methods={"lora": None}, grid={"model.name": ["tiny-t5", "tiny-llama"], "seed": [1],
                                                          "data.seed": [5]})  # fmt: skip
    proc = cli("sweep", str(path), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("lora-")]
    assert len(rows) == 2
    assert {"model=tiny-t5", "model=tiny-llama"} <= {part for row in rows for part in row.replace(",", " ").split()}
    assert all("seed=1" in row and "data.seed=5" in row and "name=" not in row for row in rows)


def _sweep_cmd(path):
    return [sys.executable, "-m", "peftbench", "sweep", str(path), "--no-progress"]


@pytest.mark.slow
def test_local_sweep_finishes_skips_and_resumes_after_preemption(tmp_path):
    overrides = {"output_dir": str(tmp_path / "runs"), "train.max_steps": 12, "train.save_steps": 4}
    path = _write(
        tmp_path, methods={"lora": {"method.r": 4}, "adapter_pfeiffer": {"method.size": 8}}, overrides=overrides
    )
    runs = expand(load_sweep(path))
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", **slow_env(step_s=0.4, evaluation_batch_s=0.4)}
    # The resume below inherits this process's environment; both must use the same CPU kernels, or the tiny base
    # built from its config (random init, whose values depend on the kernels) differs and the resume is refused.
    env.update({k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS") if k in os.environ})
    proc = subprocess.Popen(_sweep_cmd(path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "runs").glob("*/checkpoints/checkpoint-*")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out
    assert "preempted" in out
    # one at a time: the 2nd waits
    assert (
        run_status(runs[0].run_dir) == "preempted" and run_status(runs[1].run_dir) == "new"
    )  # one at a time: the 2nd waits

    again = in_process("sweep", str(path), "--no-progress")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 finished" in again.stdout
    log = (tmp_path / "runs" / ".sweep" / f"{runs[0].name}.log").read_text()
    assert "resuming from checkpoint-" in log
    for run in runs:
        metrics = json.loads((run.run_dir / "metrics.json").read_text())
        assert metrics["train"]["steps"] == 12

    third = in_process("sweep", str(path), "--no-progress")
    assert third.returncode == 0 and "2 skipped" in third.stdout


def test_the_study_sweep_scales_lora_with_alpha_equal_to_r():
    """The study sets alpha = r for every rank it sweeps; a fixed alpha in the preset would not follow r."""
    from peftbench.configure import method_config

    runs = [r for r in expand(load_sweep(SWEEPS / "study.yaml")) if r.method == "lora"]
    assert {r.config.method["r"] for r in runs} == {8, 32, 64, 128, 256, 512}
    assert all(method_config(r.config).alpha is None for r in runs)  # lora.apply: lora_alpha = r


def test_command_line_overrides_reach_every_run_and_its_hash(cli, tmp_path):
    """Issue 17, item 5: `peftbench sweep SWEEP.yaml key=value ...` points a sweep at a local model and data
    without editing the file; the dry-run counts trainable parameters on the local model's config.json."""
    from transformers import T5Config

    model_dir = tmp_path / "my t5"  # a local path, with a space
    T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, feed_forward_proj="gated-gelu").save_pretrained(
        model_dir
    )
    path = _write(tmp_path, methods={"lora": {"method.r": [4, 8]}}, grid={"seed": [1, 2]})
    plain = expand(load_sweep(path))
    extra = [f"model.name={model_dir}", "data.data_dir=/data/natural-instructions", "train.mixed_precision=no"]
    pointed = expand(load_sweep(path, extra))
    assert len(pointed) == len(plain) == 4
    for run in pointed:
        assert run.config.model.name == str(model_dir) and run.config.data.data_dir == "/data/natural-instructions"
        assert run.config.train.mixed_precision == "no"
    assert not {r.name for r in pointed} & {r.name for r in plain}  # part of every run's config hash

    proc = cli("sweep", str(path), "--dry-run", *extra)
    assert proc.returncode == 0, proc.stderr
    assert "4 runs (4 new)" in proc.stdout and "?" not in proc.stdout
    # LoRA on q, v of 3 attention blocks (encoder self, decoder self and cross), each 32 -> 32: r * 64 * 6
    assert f"{4 * 64 * 6:,}" in proc.stdout and f"{8 * 64 * 6:,}" in proc.stdout

    varied = cli("sweep", str(path), "--dry-run", "seed=3")
    assert varied.returncode == 2 and "seed=3 overrides a value" in varied.stderr
    assert len(varied.stderr.strip().splitlines()) == 1
    bad = cli("sweep", str(path), "--dry-run", "train.learnig_rate=1")
    assert bad.returncode == 2 and "train.learnig_rate" in bad.stderr and "Traceback" not in bad.stderr
