"""Shared fixtures: tiny configs, the shared SuperNI sample, subprocess helpers."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite tests peftbench, not the method plugins installed beside it (a researcher's own, docs/own-method.md):
# their entry points are ignored here and in every process a test starts. Tests of plugin loading set their own.
os.environ.setdefault("PEFTBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist (make test, make test-fast) every worker and the processes it starts use one thread:
    # two workers with one OpenMP thread per core each made the tiny models train several times slower (threads
    # spin waiting for a core), not faster. Set before torch is imported, so its subprocesses inherit it too.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SUPERNI_MINI = REPO.parent / "shared" / "data" / "superni-mini"


# Started first under xdist (their modules kept whole): the longest tests, so that no worker ends with them alone.
FIRST = (
    "tests/demo/test_demo.py::test_full_demo_methods_beat_the_untrained_base",
    "tests/training/test_fsdp.py",
    "tests/launch/test_slurm.py",
    "tests/launch/test_wheel.py",
    "tests/training/test_preemption.py",
    "tests/training/test_faults.py",
    "tests/training/test_distributed.py",
    "tests/evaluation/test_sharded.py",
    "tests/launch/test_sweep.py",
    "tests/recipe/test_end_to_end.py",
)


def pytest_collection_modifyitems(config, items):
    """Under xdist, moves the tests in FIRST to the front (make test passes --no-loadscope-reorder, so the
    workers take them in this order); a serial run keeps the files' order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def rank(item) -> int:
        return next((i for i, prefix in enumerate(FIRST) if item.nodeid.startswith(prefix)), len(FIRST))

    items.sort(key=rank)


def require_superni_mini() -> Path:
    """The real SuperNI sample beside the checkout; skips the calling test (or module fixture) when it is absent."""
    if not (SUPERNI_MINI / "tasks").is_dir():
        pytest.skip(f"shared SuperNI sample not found at {SUPERNI_MINI}")
    return SUPERNI_MINI


@pytest.fixture
def superni_mini() -> Path:
    """The real SuperNI sample beside the checkout; tests using it skip when it is absent."""
    return require_superni_mini()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Runs ``python -m peftbench ARGS`` in a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "peftbench", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def in_process(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``peftbench ARGS`` through ``peftbench.cli.main`` in this process, stdout and stderr captured, ``env`` set
    for the call only; returns a CompletedProcess like ``run_cli``. For successful commands whose work, not a
    process, is the point: a new Python process spends about 5 s of CPU importing torch, transformers, peft and
    the scorer before it starts. The ``cli`` fixture is this function."""
    import torch

    from peftbench.cli import main

    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    threads = torch.get_num_threads()
    if env and "OMP_NUM_THREADS" in env:  # what a new process would read at start
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        torch.set_num_threads(threads)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(["peftbench", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    """``cli(*ARGS)`` runs ``peftbench ARGS`` in this process (:func:`in_process`); for commands whose exit status
    and output are the point, not a real process (signals, launchers, a run's own process state use ``run_cli``)."""
    return in_process


def tiny_mini_config(data_dir: Path, out: Path, model: str = "tiny-t5", method: str = "lora", **extra) -> dict:
    """A seconds-long config on the SuperNI sample (plain dict, YAML-ready)."""
    cfg = {
        "model": {"name": model},
        "method": {"name": method},
        "data": {
            "data_dir": str(data_dir),
            "split": "mini",
            "max_train_instances_per_task": 2,
            "max_eval_instances_per_task": 1,
            "max_source_length": 128,
            "max_target_length": 16,
        },
        "train": {"max_steps": 3, "per_device_batch_size": 4, "logging_steps": 1},
        "eval": {"batch_size": 16, "max_new_tokens": 8},
        "output_dir": str(out),
    }
    for key, value in extra.items():
        cfg.setdefault(key, {}).update(value) if isinstance(value, dict) else cfg.__setitem__(key, value)
    return cfg
