"""The contract's checks on whole runs: SIGTERM and resume, and two ranks against one process."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path
from typing import Any

import torch

from peftbench.config import ExperimentConfig
from peftbench.configure import config_from_dict, method_config
from peftbench.io import load_tensors
from peftbench.recipe.contract.common import Skip, contract_config, given_options
from peftbench.recipe.run import run_experiment
from peftbench.training.callbacks import Callback
from peftbench.training.preemption import Preempted


class _TermAt(Callback):
    """Sends this process SIGTERM after optimizer step ``step`` (the run's handler sets its stop flag)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, step: int, total: int) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def run_raw(cfg: ExperimentConfig, out: Path, run_name: str, **train: Any) -> dict[str, Any]:
    """A tiny run of the method on the demo's generated tasks (8 steps, a checkpoint every 3), as a raw config;
    ``train`` overrides ``train.*``."""
    return {
        "model": {"name": cfg.model.name},
        "method": {"name": cfg.method_name, **given_options(cfg)},
        "data": {
            "data_dir": "@demo",
            "split": "demo",
            "num_train_tasks": 4,
            "max_train_instances_per_task": 4,
            "max_eval_instances_per_task": 1,
            "max_source_length": 128,
            "max_target_length": 8,
        },
        "train": {
            "max_steps": 8,
            "per_device_batch_size": 2,
            "save_steps": 3,
            "eval_steps": 1000,
            "logging_steps": 1,
            "learning_rate": 5e-3,
            "report_to": [],
            **train,
        },
        "eval": {"batch_size": 8, "max_new_tokens": 4, "weights": "last"},
        "output_dir": str(out),
        "run_name": run_name,
        "seed": 7,
    }


def run_config(cfg: ExperimentConfig, out: Path, run_name: str) -> ExperimentConfig:
    """:func:`run_raw` as a config."""
    return config_from_dict(run_raw(cfg, out, run_name))


def check_resume(cfg: ExperimentConfig, workdir: Path) -> str | None:
    """A run stopped by SIGTERM at step 4 (saved at step 3) and resumed ends bit-identical to an uninterrupted
    run: the same trained weights and losses. Leaves the finished run in ``workdir/<model>/resumed``."""
    out = workdir / cfg.model.name
    reference = run_experiment(run_config(cfg, out, "reference"), progress=False, quiet=True).run_dir
    stopped = run_config(cfg, out, "resumed")
    try:
        run_experiment(stopped, progress=False, quiet=True, callbacks=[_TermAt(4)])
        return "SIGTERM at step 4 did not stop the run (the handler was not reached)"
    except Preempted:
        pass
    run_dir = run_experiment(stopped, progress=False, quiet=True).run_dir
    a, b = (load_tensors(d / "trainable.safetensors") for d in (run_dir, reference))
    if a.keys() != b.keys():
        return "the resumed run saved other tensors than the uninterrupted one"
    differ = sorted(k for k in a if not torch.equal(a[k], b[k]))
    if differ:
        return f"{len(differ)} trained tensor(s) differ from an uninterrupted run, e.g. {differ[0]}"
    losses = [json.loads((d / "metrics.json").read_text())["train"]["losses"] for d in (run_dir, reference)]
    if losses[0] != losses[1]:
        return "the resumed run's losses differ from an uninterrupted run's"
    return None


DISTRIBUTED_STEPS = 3
"""2 ranks x batch 2 x 3 steps: 12 of the 16 training examples, inside the first epoch."""


def _train_processes(config: dict[str, Any], path: Path, launcher: list[str], timeout: float) -> str | None:
    """``peftbench train`` of ``config`` (written to ``path``) under ``launcher``, on the CPU with one thread per
    process (the same kernels in every rank, gloo between ranks, on a GPU machine too), with this process's import
    path (a ``method.module`` importable here is importable there); a one-line reason when it fails."""
    import subprocess
    import sys

    path.write_text(json.dumps(config))
    python_path = os.pathsep.join([p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": python_path,
    }
    command = [sys.executable, *launcher, "-m", "peftbench", "train", str(path), "--no-progress"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        return f"the {path.stem} run did not finish within {timeout:.0f} s"
    if proc.returncode != 0:
        return f"the {path.stem} run exited {proc.returncode}: {_reason(err, out)}"
    return None


def _stop_group(proc) -> None:
    """SIGTERM to the run's whole process group (torchrun and its ranks), then SIGKILL to what is left."""
    import subprocess

    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.communicate(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _reason(err: str, out: str) -> str:
    """The line that says why a run failed: peftbench's one-line error, else the last exception line of a
    traceback, else the last line of output."""
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("peftbench: "):  # its one-line error, or why a run stopped
            return line
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return line
    rest = [line.strip() for line in out.splitlines() if line.strip()]
    return (lines or rest or ["no output"])[-1]


def check_distributed(cfg: ExperimentConfig, workdir: Path) -> str | None:
    """Two gloo ranks on the CPU (torchrun, batch 2 each) train to the weights and losses of one process with batch 2
    and gradient accumulation 2: the same global batches (accelerate deals them round-robin), so equal to float
    tolerance. The method's dropout options (float fields named ``*dropout*``) are 0 in both runs: ranks draw their
    masks from their own generators."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        raise Skip("torch.distributed with the gloo backend is not available in this torch build")
    options = given_options(cfg)
    resolved = method_config(cfg)  # the options with the method's defaults: dropout is a float field named *dropout*
    for field in dataclasses.fields(resolved):
        if "dropout" in field.name and isinstance(getattr(resolved, field.name), float):
            options[field.name] = 0.0
    plain = contract_config(cfg.model.name, cfg.method_name, **options)
    out = workdir / cfg.model.name / "distributed"
    out.mkdir(parents=True, exist_ok=True)
    runs = {
        "two-ranks": ([*TORCHRUN], 1),
        "one-rank": ([], 2),
    }
    for name, (launcher, accumulation) in runs.items():
        train = {"max_steps": DISTRIBUTED_STEPS, "save_steps": 1000, "gradient_accumulation_steps": accumulation}
        raw = run_raw(plain, out, name, **train)
        problem = _train_processes(raw, out / f"{name}.json", launcher, timeout=600)
        if problem:
            return problem
    two, one = out / "two-ranks", out / "one-rank"
    a, b = load_tensors(two / "trainable.safetensors"), load_tensors(one / "trainable.safetensors")
    if a.keys() != b.keys():
        return "the two ranks saved other tensors than one process"
    for key in sorted(a):
        if not torch.allclose(a[key].float(), b[key].float(), atol=1e-6, rtol=1e-5):
            diff = (a[key].float() - b[key].float()).abs().max().item()
            return f"two ranks trained {key} differently from one process (max |diff| {diff:.3g})"
    losses = [json.loads((d / "metrics.json").read_text())["train"]["losses"] for d in (two, one)]
    if [s for s, _ in losses[0]] != [s for s, _ in losses[1]] or any(
        abs(x - y) > 1e-5 * abs(y) for (_, x), (_, y) in zip(losses[0], losses[1], strict=True)
    ):
        return f"the two ranks logged losses {losses[0]}, one process {losses[1]}"
    return None


TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
"""torchrun with 2 processes on this machine."""
