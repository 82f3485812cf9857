"""Named presets: ``configs/presets/defaults.yaml`` + ``configs/methods/METHOD.yaml`` (+ ``dev.yaml`` in dev mode).

A preset is the study's setting for one method. ``full`` mode is the study itself (T5-3B, SuperNI default
split, 8 GPUs); ``dev`` mode overlays ``configs/presets/dev.yaml`` and the method file's ``dev:`` section,
shrinking model, data and steps so that the whole pipeline runs in about a minute on a CPU.
"""

from __future__ import annotations

import copy
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from peftbench.config import ExperimentConfig
from peftbench.configure import apply_overrides, config_from_dict, read_config_file
from peftbench.errors import PeftbenchError

MODES = ("dev", "full")


def configs_dir() -> Path:
    """The shipped ``configs/`` directory ($PEFTBENCH_CONFIGS, else the checkout's ``configs/``)."""
    env = os.environ.get("PEFTBENCH_CONFIGS")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "configs"
    if not (path / "presets" / "defaults.yaml").is_file():
        raise PeftbenchError(f"cannot find peftbench's presets under {path}; set PEFTBENCH_CONFIGS to a configs/ dir")
    return path


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section (lists and scalars are replaced, mappings merged)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def available_presets() -> list[str]:
    """Methods with a preset file."""
    return sorted(p.stem for p in (configs_dir() / "methods").glob("*.yaml"))


def preset_dict(method: str, mode: str = "full") -> dict[str, Any]:
    """The raw (unvalidated) config of a preset."""
    if mode not in MODES:
        raise PeftbenchError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    root = configs_dir()
    path = root / "methods" / f"{method}.yaml"
    if not path.is_file():
        raise PeftbenchError(f"no preset for method {method!r}; presets: {', '.join(available_presets())}")
    method_raw = read_config_file(path)
    dev_part = method_raw.pop("dev", None) or {}
    raw = deep_merge(read_config_file(root / "presets" / "defaults.yaml"), method_raw)
    if mode == "dev":
        raw = deep_merge(raw, read_config_file(root / "presets" / "dev.yaml"))
        raw = deep_merge(raw, dev_part)
    return raw


def preset_config(method: str, mode: str = "full", overrides: list[str] | None = None) -> ExperimentConfig:
    """The validated config of a preset with ``key=value`` overrides applied."""
    return config_from_dict(apply_overrides(preset_dict(method, mode), list(overrides or [])))


def in_distributed_launch() -> bool:
    """True inside a process started by torchrun / accelerate launch (or another rank-aware launcher)."""
    return "WORLD_SIZE" in os.environ or "LOCAL_RANK" in os.environ


def launch_command(cfg: ExperimentConfig, args: list[str]) -> list[str]:
    """The command that starts ``python -m peftbench ARGS`` with ``cfg.launch.num_processes`` processes.

    With an accelerate config, ``accelerate launch --config_file F --num_processes N``; without one,
    ``torchrun --nproc_per_node N`` (DDP; gloo on CPU, NCCL on GPU). One process: plain Python.
    """
    n = cfg.launch.num_processes
    if n <= 1:
        return [sys.executable, "-m", "peftbench", *args]
    if cfg.launch.accelerate_config:
        config_file = Path(cfg.launch.accelerate_config)
        if not config_file.is_absolute() and not config_file.exists():
            config_file = configs_dir().parent / config_file
        return [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
            "--num_processes", str(n), "-m", "peftbench", *args,
        ]  # fmt: skip
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "peftbench",
            *args]  # fmt: skip


def relaunch(cfg: ExperimentConfig, args: list[str]) -> int:
    """Runs ``peftbench ARGS`` again under the multi-process launcher; returns its exit status."""
    command = launch_command(cfg, args)
    print("launching: " + shlex.join(command), file=sys.stderr)
    return subprocess.call(command)
