"""``peftbench status``: every run below a directory with its state, last valid checkpoint and headline."""

from __future__ import annotations

import json
from pathlib import Path

from peftbench.errors import PeftbenchError
from peftbench.recipe.rundir import config_hash, read_run_config
from peftbench.recipe.runfiles import (
    CONFIG_FILE,
    STATE_FILE,
    ModelId,
    RunState,
    finished_metrics,
    model_labels,
    run_status,
)
from peftbench.training.checkpoint import checkpoint_dirs, validate_checkpoint


def run_row(run_dir: Path) -> dict:
    """One run's row: its status (:func:`~peftbench.recipe.runfiles.run_status`), last valid checkpoint step, and
    metrics when finished (reads only)."""
    state = RunState(run_dir / STATE_FILE)  # a damaged state file reads as empty
    metrics = finished_metrics(run_dir)
    status = run_status(run_dir)
    last = None
    model = None
    try:
        cfg = read_run_config(run_dir)
        model = ModelId(cfg.model.name, cfg.model.dtype, None)
        for path in reversed(checkpoint_dirs(run_dir)):
            world_size = json.loads((path / "manifest.json").read_text())["world_size"]
            if validate_checkpoint(path, config_hash(cfg), world_size) is None:
                last = int(path.name.rsplit("-", 1)[1])
                break
    except (PeftbenchError, OSError, ValueError, KeyError):
        pass
    error = state.get("error")
    return {"run": run_dir, "status": status, "checkpoint": last, "metrics": metrics, "error": error, "model": model}


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
    states = [run_row(run_dir) for run_dir in runs]
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
