"""A run directory: its name (config hash, run name), its files, the run's state, config, metrics and weights.

A run directory holds ``config.yaml`` (fully resolved), ``train.log``, ``run_state.json``,
``trainable.safetensors`` (the method's weights only, never the base model unless the method is full
fine-tuning; ``last.safetensors`` too when the best validation weights replaced the last ones),
``predictions.jsonl`` and ``metrics.json``; ``checkpoints/``, ``best/`` and ``quarantine/`` belong to
:mod:`peftbench.training.checkpoint`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from peftbench.config import ExperimentConfig
from peftbench.configure import config_from_dict, load_yaml, method_config
from peftbench.errors import PeftbenchError
from peftbench.io import (
    DamagedFileError,
    atomic_write_json,
    file_sha256,
    read_json_file,
    read_text_file,
    tensor_metadata,
)
from peftbench.methods import get_method
from peftbench.recipe.runfiles import BASE_FILE, CONFIG_FILE, STATE_FILE, WEIGHTS_FILE, RunState
from peftbench.trained import refuse_other_base
from peftbench.training.preemption import Preempted
from peftbench.weights import apply_trainable, read_trainable, write_trainable

# --------------------------------------------------------------------------------------------------
# Name


def config_hash(cfg: ExperimentConfig) -> str:
    """A short hash of everything that determines the results (not where they are written)."""
    payload = {k: v for k, v in cfg.to_dict().items() if k not in ("output_dir", "run_name", "launch")}
    payload["train"] = {k: v for k, v in payload["train"].items() if k not in ("report_to", "gradient_checkpointing")}
    payload["data"] = {k: v for k, v in payload["data"].items() if k != "cache"}
    payload["eval"] = {k: v for k, v in payload["eval"].items() if k != "share_prefix"}
    revision = get_method(cfg.method_name).revision
    if revision:  # absent at 0, so the hashes of unchanged methods stay what they were
        payload["method_revision"] = revision
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


_SHORT = {"num_virtual_tokens": "tok", "init_r": "r"}
"""Short forms of size knobs in run names."""


def resolved_run_name(cfg: ExperimentConfig) -> str:
    """The run directory's name: ``cfg.run_name``, else readable and unique, e.g. ``lora-r8-lr5e-4-s42-1a2b3c4d5e``
    (method, its size, learning rate, training-task count when set, seed, config hash)."""
    if cfg.run_name:
        return cfg.run_name
    parts = [cfg.method_name]
    knob = get_method(cfg.method_name).size_knob
    if knob is not None and cfg.method.get(knob.field) is not None:
        parts.append(f"{_SHORT.get(knob.field, knob.field)}{cfg.method[knob.field]}")
    if cfg.train.learning_rate is not None:
        mantissa, exponent = f"{cfg.train.learning_rate:.2e}".split("e")
        parts.append(f"lr{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}")
    if cfg.data.num_train_tasks is not None:
        parts.append(f"t{cfg.data.num_train_tasks}")
    parts += [f"s{cfg.seed}", config_hash(cfg)]
    return "-".join(parts)


def run_dir_for(cfg: ExperimentConfig) -> Path:
    """Where the run of ``cfg`` writes its files: ``output_dir/<resolved_run_name>``."""
    return Path(cfg.output_dir) / resolved_run_name(cfg)


# --------------------------------------------------------------------------------------------------
# Config and metrics


def read_run_config(run_dir: Path) -> ExperimentConfig:
    """The config a run was made with."""
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise PeftbenchError(f"{run_dir} is not a directory")
    if not path.is_file():
        raise PeftbenchError(f"{run_dir} is not a peftbench run directory (no {CONFIG_FILE})")
    advice = "restore it, or move the run directory away to start the run again"
    try:
        raw = load_yaml(read_text_file(path, advice))
    except yaml.YAMLError:
        raise DamagedFileError(path, "not valid YAML", advice) from None
    if not isinstance(raw, dict):
        raise DamagedFileError(path, "expected a mapping", advice)
    try:
        return config_from_dict(raw)
    except PeftbenchError as exc:  # torn YAML can still parse, into a config missing its sections
        raise PeftbenchError(f"{path}: {exc} (damaged? {advice})") from None


def check_same_config(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Refuses to reuse a run directory made with a different configuration."""
    saved, wanted = config_hash(read_run_config(run_dir)), config_hash(cfg)
    if saved != wanted:
        raise PeftbenchError(
            f"{run_dir} holds a run with a different config (hash {saved} != {wanted}, from its {CONFIG_FILE}); "
            "use another run_name or output_dir"
        )


# --------------------------------------------------------------------------------------------------
# State


@contextlib.contextmanager
def run_state(run_dir: Path) -> Iterator[RunState]:
    """Marks the run as running for the block, then as finished, preempted or failed."""
    state = RunState(run_dir / STATE_FILE)
    state.update(status="running", pid=os.getpid(), host=socket.gethostname(), error=None)
    state.save()
    try:
        yield state
    except Preempted:
        state.update(status="preempted")
        state.save()
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: stopped on purpose, without a checkpoint; not a crash
        state.update(status="interrupted", error="stopped by a second Ctrl-C before it could save")
        state.save()
        raise
    except BaseException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        state.update(status="failed", error=first)
        state.save()
        raise
    state.update(status="finished")
    state.save()


# --------------------------------------------------------------------------------------------------
# Weights


def method_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """The method's resolved options as JSON values: what saved weights are the parameters of (the base model is
    checked apart, by its weights' SHA-256 in base.json)."""
    return json.loads(json.dumps(dataclasses.asdict(method_config(cfg)), default=str))


def changed_options(recorded: dict[str, Any], cfg: ExperimentConfig) -> list[str]:
    """The options recorded with saved weights that ``cfg`` now sets otherwise (an option added since, at its
    default, is no change)."""
    now = method_options(cfg)
    return [f"{k}: {recorded[k]!r} -> {now[k]!r}" for k in sorted(recorded) if k in now and now[k] != recorded[k]]


def save_trainable(model: nn.Module, path: Path, cfg: ExperimentConfig) -> int:
    """Saves the method's parameters (only those with ``requires_grad``), stamped with the method, the config hash
    and the method's options (:func:`method_options`); returns how many tensors."""
    options = json.dumps(method_options(cfg), sort_keys=True)
    metadata = {"method": cfg.method_name, "config_hash": config_hash(cfg), "method_options": options}
    return write_trainable(model, path, metadata=metadata)


def check_weights(run_dir: Path) -> None:
    """Refuses, in one line, saved weights whose SHA-256 is not the one ``run_state.json`` recorded when they were
    saved (runs from before it was recorded are not checked)."""
    path = run_dir / WEIGHTS_FILE
    recorded = RunState(run_dir / STATE_FILE).get("weights_sha256")
    if recorded is not None and path.is_file() and file_sha256(path) != recorded:
        raise DamagedFileError(
            path,
            "its SHA-256 is not the one recorded when it was saved",
            "its checkpoints still hold the training: delete it and metrics.json, then run `peftbench train` with "
            "the run's config",
        )


def load_trainable(model: nn.Module, path: Path, cfg: ExperimentConfig | None = None) -> None:
    """Loads saved method weights into a freshly built model; every trainable tensor must be present. With ``cfg``
    (the run's config.yaml, as read now), weights saved under another method or other method options are refused in
    one line (weights saved before the options were recorded are checked by their shapes only)."""
    if not path.is_file():
        raise PeftbenchError(f"{path} is missing: the run has no saved weights (did training finish?)")
    state = read_trainable(path)
    if cfg is not None:
        metadata = tensor_metadata(path)
        method = metadata.get("method")
        changed = [f"method: {method!r} -> {cfg.method_name!r}"] if method and method != cfg.method_name else []
        if not changed and "method_options" in metadata:
            changed = changed_options(json.loads(metadata["method_options"]), cfg)
        if changed:
            raise PeftbenchError(
                f"{path} was trained with other method settings than {path.parent / CONFIG_FILE} now gives "
                f"({'; '.join(changed)}); restore them, or train again"
            )
    apply_trainable(model, state, str(path))


def record_base(run_dir: Path, cfg: ExperimentConfig, sha256: str) -> None:
    """Writes ``base.json`` once, when the run starts: which base model, in which dtype, with which weights."""
    path = run_dir / BASE_FILE
    if not path.is_file():
        atomic_write_json(path, {"name": cfg.model.name, "dtype": cfg.model.dtype, "sha256": sha256})


def check_base(run_dir: Path, sha256: str) -> None:
    """Refuses, in one line, a base model whose weights differ from those the run trained on (``base.json``;
    runs from before it was recorded are not checked)."""
    path = run_dir / BASE_FILE
    if not path.is_file():
        return
    advice = "delete it to skip the base check"
    if path.is_dir():
        raise DamagedFileError(path, "a directory, not a file", advice)
    recorded = read_json_file(path, advice)
    if not isinstance(recorded.get("sha256"), str):
        raise DamagedFileError(path, "no sha256 string", advice)
    refuse_other_base(
        run_dir, recorded, sha256, "the model changed since training; point model.name at the original weights"
    )
