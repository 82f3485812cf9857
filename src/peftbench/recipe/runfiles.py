"""A run directory read back without building anything: its files' names, its state, its metrics, its base model.

The one reader that ``peftbench status``, the sweep (which runs to start) and the report share; writing a run
directory is the recipe's (:mod:`peftbench.recipe.rundir`). Imports neither torch nor the methods.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from peftbench.errors import PeftbenchError
from peftbench.io import atomic_write_json, read_json_file, read_text_file

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "trainable.safetensors"
LAST_WEIGHTS_FILE = "last.safetensors"
PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
LOG_FILE = "train.log"
STATE_FILE = "run_state.json"
BASE_FILE = "base.json"
"""The base model a run trained on: name, dtype and the SHA-256 of its weights (:func:`record_base`)."""
INSTANCE_SCORES_FILE = "instance_scores.json"
"""Every test instance's exact match and ROUGE-L, kept when the run is evaluated (for the report's intervals)."""


def saved_config(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``config.yaml`` as a plain mapping, or None when it is missing or damaged (for readers that can do
    without it: the report falls back on ``metrics.json``)."""
    try:
        raw = yaml.safe_load(read_text_file(run_dir / CONFIG_FILE))
    except (FileNotFoundError, PeftbenchError, yaml.YAMLError):
        return None
    return raw if isinstance(raw, dict) else None


def finished_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The metrics of a finished run, or None."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    try:
        metrics = read_json_file(path)
    except PeftbenchError:  # damaged (a crash while it was written elsewhere, a bad disk): evaluated again
        return None
    return metrics if metrics.get("status") == "finished" and isinstance(metrics.get("overall"), dict) else None


def base_params(metrics: dict[str, Any]) -> int | None:
    """The base model's parameter count of a finished run (None when unknown).

    ``metrics.json`` records it as ``base_params``. Runs recorded before it have ``total_params``, the base and
    the method's added parameters together: their base is that total for full fine-tuning and the untrained
    base, else ``total_params - trainable_params``, exact for methods that only add parameters and, for methods
    that also train some of the base's own (layer norms, biases), short by those few.
    """
    if isinstance(metrics.get("base_params"), int):
        return metrics["base_params"]
    total, trainable = metrics.get("total_params"), metrics.get("trainable_params") or 0
    if not isinstance(total, int) or total <= 0:
        return None
    return total if metrics.get("method") in ("full", "untrained") or trainable >= total else total - trainable


def trainable_percent(metrics: dict[str, Any]) -> float:
    """Trainable parameters as a percentage of the base model's (the one denominator peftbench uses, also for
    runs recorded with another: see :func:`base_params`)."""
    base = base_params(metrics)
    return 100 * (metrics.get("trainable_params") or 0) / base if base else float(metrics.get("trainable_percent", 0))


def headline(name: str, metrics: dict[str, Any]) -> str:
    """One line: run name, exact match, ROUGE-L, trainable parameters."""
    o = metrics["overall"]
    return (
        f"{name}: exact_match {o['exact_match']:.2f} | rougeL {o['rougeL']:.2f} | "
        f"{o['num_examples']} examples | trainable {metrics['trainable_params']:,} "
        f"({trainable_percent(metrics):.4f}% of the base model)"
    )


class RunState(dict):
    """``run_state.json``: status (running / preempted / failed / finished), pid, host, training facts."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        if path.is_file():
            with contextlib.suppress(PeftbenchError):  # a damaged state is rebuilt: it only describes the run
                self.update(read_json_file(path))

    def save(self) -> None:
        """Writes the state atomically."""
        self["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(self.path, dict(self))


STATUSES = ("new", "running", "interrupted", "preempted", "failed", "finished")
"""What :func:`run_status` answers: no state yet; running now (or on another host); killed on this host without
saving (resumable from its checkpoints); stopped by a suspension signal after saving; stopped by an error;
evaluated."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(run_dir: Path) -> str:
    """The state of one run (one of :data:`STATUSES`), from its ``metrics.json`` and ``run_state.json`` (reads only;
    a damaged state file reads as empty). A run recorded as running on this host whose process is gone was killed
    without a chance to save (e.g. SIGKILL): ``interrupted``."""
    if finished_metrics(run_dir) is not None:
        return "finished"
    state = RunState(run_dir / STATE_FILE)
    status = state.get("status")
    if status not in STATUSES:
        return "new"
    pid = state.get("pid") if isinstance(state.get("pid"), int) else 0
    if status == "running" and state.get("host") == socket.gethostname() and not _alive(pid):
        return "interrupted"
    return str(status)


@dataclass(frozen=True)
class ModelId:
    """What makes two runs' base models the same: name (hub name or path), dtype, parameter count."""

    name: str
    dtype: str
    base_params: int | None


def model_id(run_dir: Path, metrics: dict[str, Any]) -> ModelId:
    """The base model of a finished run, from its config.yaml (and metrics.json)."""
    model = (saved_config(run_dir) or {}).get("model")
    model = model if isinstance(model, dict) else {}
    return ModelId(str(model.get("name", metrics.get("model", ""))), str(model.get("dtype", "")), base_params(metrics))


def _size(count: int | None) -> str:
    if count is None:
        return "? params"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit} params"
    return f"{count} params"


def model_labels(ids: list[ModelId]) -> dict[ModelId, str]:
    """A short, unique label per base model: the name's last path part (the whole name where two share it),
    with the dtype where one name comes in several, and the size where one name and dtype come in several."""
    unique = sorted(set(ids), key=lambda i: (i.name, i.dtype, i.base_params or 0))
    short = {name: Path(name).name or name for name in {i.name for i in unique}}
    shared = {s for s in short.values() if list(short.values()).count(s) > 1}
    labels = {}
    for i in unique:
        label = i.name if short[i.name] in shared else short[i.name]
        same_name = [j for j in unique if j.name == i.name]
        if len({j.dtype for j in same_name}) > 1:
            label += f" {i.dtype}"
        if len({j.base_params for j in same_name if j.dtype == i.dtype}) > 1:
            label += f" ({_size(i.base_params)})"
        labels[i] = label
    return labels
