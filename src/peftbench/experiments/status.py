"""``peftbench status``: every run below a directory with its state, last valid checkpoint and headline."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from peftbench.errors import PeftbenchError
from peftbench.experiments.rundir import CONFIG_FILE, STATE_FILE, config_hash, finished_metrics, read_run_config
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
    state: dict = {}
    if (run_dir / STATE_FILE).is_file():
        try:
            state = json.loads((run_dir / STATE_FILE).read_text())
        except ValueError:
            state = {}
    metrics = finished_metrics(run_dir)
    status = "finished" if metrics else state.get("status", "created")
    if status == "running" and state.get("host") == socket.gethostname() and not _alive(int(state.get("pid", 0))):
        status = "interrupted"  # killed without a chance to save (e.g. SIGKILL); resumable from a checkpoint
    last = None
    try:
        cfg = read_run_config(run_dir)
        for path in reversed(checkpoint_dirs(run_dir)):
            if validate_checkpoint(path, config_hash(cfg), json.loads((path / "manifest.json").read_text())[
                "world_size"]) is None:  # fmt: skip
                last = int(path.name.rsplit("-", 1)[1])
                break
    except (PeftbenchError, OSError, ValueError, KeyError):
        pass
    return {"run": run_dir, "status": status, "checkpoint": last, "metrics": metrics, "error": state.get("error")}


def status_table(runs_dir: str | Path) -> str:
    """One line per run directory below ``runs_dir``."""
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
    lines = [f"{'run':40} {'status':12} {'checkpoint':>10}  result"]
    for run_dir in runs:
        s = run_status(run_dir)
        name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
        ckpt = "-" if s["checkpoint"] is None else f"step {s['checkpoint']}"
        if s["metrics"]:
            o = s["metrics"]["overall"]
            result = f"EM {o['exact_match']:.2f}  ROUGE-L {o['rougeL']:.2f}  ({o['num_examples']} examples)"
        else:
            result = s["error"] or ""
        lines.append(f"{name:40} {s['status']:12} {ckpt:>10}  {result}")
    return "\n".join(lines)
