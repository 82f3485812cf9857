"""scripts/gpu_check.sh, the GPU figures' one command: its CPU-side behaviour (no GPU in CI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_dry_run_lists_every_benchmark_on_cuda_and_the_bf16_smoke_run_within_8_minutes():
    proc = _run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for script in ("train_bench.py", "eval_bench.py --device cuda --mode random", "--mode trained",
                   "checkpoint_bench.py"):  # fmt: skip
        assert any(script in line and "--device cuda" in line for line in lines), script
    assert any("peftbench run lora --mode dev" in line and "bfloat16" in line for line in lines)
    assert sum(int(line.split()[1]) for line in lines) < 8 * 60  # the timeouts bound the whole check


def test_unknown_argument_is_one_line():
    proc = _run("--bogus")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the check would run")
def test_without_cuda_it_says_so_in_one_line_and_runs_nothing():
    proc = _run()
    assert proc.returncode == 3
    assert proc.stderr.strip().startswith("gpu_check: no CUDA device") and proc.stderr.count("\n") == 1
    assert proc.stdout == ""
