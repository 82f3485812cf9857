"""``peftbench status``: every run below a directory with its state, last valid checkpoint and headline."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from peftbench.errors import PeftbenchError
from peftbench.experiments.analysis import ModelId, model_labels
from peftbench.experiments.rundir import (
    CONFIG_FILE,
    STATE_FILE,
    RunState,
    config_hash,
    finished_metrics,
    read_run_config,
)
from peftbench.training.checkpoint import checkpoint_dirs, validate_checkpoint


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(run_dir: Path) -> dict:
    """State of one run: status, last valid checkpoint step, and metrics when finished (reads only)."""
    state = RunState(run_dir / STATE_FILE)  # a damaged state file reads as empty
    metrics = finished_metrics(run_dir)
    status = "finished" if metrics else str(state.get("status", "created"))
    pid = state.get("pid") if isinstance(state.get("pid"), int) else 0
    if status == "running" and state.get("host") == socket.gethostname() and not _alive(pid):
        status = "interrupted"  # killed without a chance to save (e.g. SIGKILL); resumable from a checkpoint
    last = None
    model = None
    try:
        cfg = read_run_config(run_dir)
        model = ModelId(cfg.model.name, cfg.model.dtype, None)
        for path in reversed(checkpoint_dirs(run_dir)):
            if validate_checkpoint(path, config_hash(cfg), json.loads((path / "manifest.json").read_text())[
                "world_size"]) is None:  # fmt: skip
                last = int(path.name.rsplit("-", 1)[1])
                break
    except (PeftbenchError, OSError, ValueError, KeyError):
        pass
    return {"run": run_dir, "status": status, "checkpoint": last, "metrics": metrics, "error": state.get("error"),
            "model": model}  # fmt: skip


def status_table(runs_dir: str | Path) -> str:
    """One line per run directory below ``runs_dir``: run, base model, status, last valid checkpoint, result;
    the columns as wide as their longest entry."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise PeftbenchError(f"{root} is not a directory")
    runs = sorted(
        p.parent
        for p in root.rglob(CONFIG_FILE)
        # W&B keeps its own config.yaml in <run_dir>/wandb/run-*/files/
        if not p.parent.name.startswith(".") and "wandb" not in p.relative_to(root).parts[:-1]
    )
    if not runs:
        raise PeftbenchError(f"no run directories (with {CONFIG_FILE}) below {root}")
    states = [run_status(run_dir) for run_dir in runs]
    labels = model_labels([s["model"] for s in states if s["model"] is not None])
    rows = [("run", "model", "status", "checkpoint", "result")]
    for run_dir, s in zip(runs, states, strict=True):
        name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
        ckpt = "-" if s["checkpoint"] is None else f"step {s['checkpoint']}"
        if s["metrics"]:
            o = s["metrics"]["overall"]
            result = f"EM {o['exact_match']:.2f}  ROUGE-L {o['rougeL']:.2f}  ({o['num_examples']} examples)"
        else:
            result = s["error"] or ""
        rows.append((name, labels.get(s["model"], "?"), s["status"], ckpt, result))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        f"{r[0]:{widths[0]}}  {r[1]:{widths[1]}}  {r[2]:{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}".rstrip()
        for r in rows
    )
