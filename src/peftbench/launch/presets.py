"""Named presets: ``configs/presets/defaults.yaml`` + ``configs/methods/METHOD.yaml`` (+ ``dev.yaml`` in dev mode).

A preset is the study's setting for one method. ``full`` mode is the study itself (T5-3B, SuperNI default
split, 8 GPUs); ``dev`` mode overlays ``configs/presets/dev.yaml`` and the method file's ``dev:`` section,
shrinking model, data and steps so that the whole pipeline runs in about a minute on a CPU.

The files ship inside the package (``peftbench/configs/``: presets, methods, sweeps, accelerate configs), so an
installed wheel has them; the checkout's top-level ``configs/`` is the user-facing copy of the same files
(tests/launch/test_shipped_configs.py checks that they are identical; ``make configs`` copies them over).
"""

from __future__ import annotations

import copy
import importlib.resources
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from peftbench.config import ExperimentConfig
from peftbench.configure import apply_overrides, config_from_dict, parse_override, read_config_file
from peftbench.errors import PeftbenchError

MODES = ("dev", "full")


def configs_dir() -> Path:
    """The shipped configs: ``$PEFTBENCH_CONFIGS``, else the package's own ``peftbench/configs/`` (package data,
    in a wheel as in a checkout)."""
    env = os.environ.get("PEFTBENCH_CONFIGS")
    # An installed or editable peftbench is a directory; a zip-imported one gets no presets (set the variable).
    path = Path(env) if env else Path(str(importlib.resources.files("peftbench") / "configs"))
    if not (path / "presets" / "defaults.yaml").is_file():
        raise PeftbenchError(f"cannot find peftbench's presets under {path}; set PEFTBENCH_CONFIGS to a configs/ dir")
    return path


def shipped_path(path: str | Path) -> Path:
    """``path`` itself when it exists (or is absolute); a relative ``configs/...`` path that does not exist here
    names the shipped file instead (``configs/accelerate/ddp.yaml`` -> ``configs_dir()/accelerate/ddp.yaml``),
    so that the presets' and docs' ``configs/...`` paths work from any directory and from an installed wheel."""
    path = Path(path)
    if path.is_absolute() or path.exists() or len(path.parts) < 2 or path.parts[0] != "configs":
        return path
    return configs_dir().joinpath(*path.parts[1:])


def available_sweeps() -> list[str]:
    """The shipped sweeps (``configs/sweeps/NAME.yaml``) by name."""
    return sorted(p.stem for p in (configs_dir() / "sweeps").glob("*.yaml"))


def sweep_file(sweep: str | Path) -> Path:
    """The sweep file ``peftbench sweep SWEEP`` reads: an existing file; else a shipped sweep by name (``study``,
    ``dev``) or by its ``configs/sweeps/NAME.yaml`` path; else ``sweep`` as given (load_sweep names it)."""
    path = Path(sweep)
    if path.is_file():
        return path
    if len(path.parts) == 1 and path.suffix == "" and path.name in available_sweeps():
        return configs_dir() / "sweeps" / f"{path.name}.yaml"
    return shipped_path(path)


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


def preset_dict(method: str, mode: str = "full", modules: Iterable[str] = ()) -> dict[str, Any]:
    """The raw (unvalidated) config of a preset. A method without a preset file that is registered (a plugin's:
    an installed package's, or one of ``modules``' (``method.module``), docs/own-method.md) gets the study's shared
    settings (``presets/defaults.yaml``, + ``dev.yaml`` in dev mode) with its own defaults (learning rate,
    schedule)."""
    if mode not in MODES:
        raise PeftbenchError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    root = configs_dir()
    path = root / "methods" / f"{method}.yaml"
    if path.is_file():
        method_raw = read_config_file(path)
    else:
        _require_registered(method, modules)
        method_raw = {"method": {"name": method}}
    dev_part = method_raw.pop("dev", None) or {}
    raw = deep_merge(read_config_file(root / "presets" / "defaults.yaml"), method_raw)
    if mode == "dev":
        raw = deep_merge(raw, read_config_file(root / "presets" / "dev.yaml"))
        raw = deep_merge(raw, dev_part)
    return raw


def _require_registered(method: str, modules: Iterable[str]) -> None:
    from peftbench.methods import get_method
    from peftbench.methods.core.registry import load_method_module

    for module in modules:
        load_method_module(module)
    try:
        get_method(method)
    except PeftbenchError as exc:
        if "unknown method" not in str(exc):
            raise
        raise PeftbenchError(
            f"no preset for method {method!r}; presets: {', '.join(available_presets())} (a method of your own: "
            "install its package or set method.module, docs/own-method.md)"
        ) from None


def named_modules(values: Mapping[str, Any] | Iterable[str]) -> list[str]:
    """Every ``method.module`` that ``values`` name, in order: ``key=value`` strings, or a mapping of dotted keys
    or sections (``{"method.module": m}``, ``{"method": {"module": m}}``); a list (a sweep axis) gives each value."""
    found: list[Any] = []
    if isinstance(values, Mapping):
        found += [
            values.get("method.module"),
            (values.get("method") or {}).get("module") if isinstance(values.get("method"), Mapping) else None,
        ]
    else:
        for item in values:
            path, value = parse_override(item)
            if path == ["method", "module"]:
                found.append(value)
            elif path == ["method"] and isinstance(value, Mapping):
                found.append(value.get("module"))
    flat = [v for f in found for v in (f if isinstance(f, list) else [f])]
    return list(dict.fromkeys(v for v in flat if isinstance(v, str) and v))


def preset_config(method: str, mode: str = "full", overrides: list[str] | None = None) -> ExperimentConfig:
    """The validated config of a preset with ``key=value`` overrides applied (a ``method.module=...`` among them
    registers a plugin's method before its preset is looked up)."""
    overrides = list(overrides or [])
    raw = preset_dict(method, mode, named_modules(overrides))
    return config_from_dict(apply_overrides(raw, overrides))


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
        config_file = shipped_path(cfg.launch.accelerate_config)
        accelerate = ["-m", "accelerate.commands.launch", "--config_file", str(config_file), "--num_processes", str(n)]
        return [sys.executable, *accelerate, "-m", "peftbench", *args]
    torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
    return [sys.executable, *torchrun, "-m", "peftbench", *args]


def relaunch(cfg: ExperimentConfig, args: list[str]) -> int:
    """Runs ``peftbench ARGS`` again under the multi-process launcher; returns its exit status."""
    command = launch_command(cfg, args)
    print("launching: " + shlex.join(command), file=sys.stderr)
    return subprocess.call(command)
