"""Experiment trackers for ``train.report_to``: TensorBoard, Weights & Biases and MLflow, through accelerate.

What every tracker receives: the resolved config as flat ``section.key`` hyperparameters, ``train/loss`` and
``train/learning_rate`` every ``train.logging_steps``, ``validation/rougeL`` at every validation, and the test
split's ``test/exact_match``, ``test/rougeL`` and ``test/num_examples`` at the last step.

- TensorBoard: ``<run_dir>/tensorboard/``.
- W&B: project ``peftbench`` (``$WANDB_PROJECT`` overrides it), run and group named after the run directory, files
  in ``<run_dir>/wandb/`` unless ``$WANDB_DIR`` is set; ``WANDB_MODE=offline`` logs without a network.
- MLflow: experiment ``peftbench`` (``$MLFLOW_EXPERIMENT_NAME`` overrides it), run named after the run directory,
  to ``$MLFLOW_TRACKING_URI`` or, when neither it nor ``mlflow.set_tracking_uri`` chose a store, the file store
  ``<output_dir>/mlruns`` (MLflow's own default, a SQLite database, needs the full ``mlflow`` package, not the
  ``mlflow-skinny`` that ``peftbench[mlflow]`` installs). MLflow 3 keeps its file store "in maintenance mode" and
  refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``; peftbench sets that (if unset) when the store is a directory.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from peftbench.config import ExperimentConfig
from peftbench.errors import PeftbenchError

PROJECT = "peftbench"
_EXTRAS = {"wandb": "wandb", "mlflow": "mlflow", "tensorboard": "tensorboard"}


def trackers(cfg: ExperimentConfig, run_dir: Path) -> list[Any] | None:
    """accelerate's ``log_with`` for ``train.report_to``: tracker names or configured tracker objects; a one-line
    error when one is not installed."""
    for name in cfg.train.report_to:
        if importlib.util.find_spec(name) is None:
            raise PeftbenchError(
                f"train.report_to includes {name!r} but it is not installed (pip install 'peftbench[{_EXTRAS[name]}]')"
            )
    chosen: list[Any] = []
    for name in cfg.train.report_to:
        if name == "wandb":
            from accelerate.tracking import WandBTracker

            options: dict[str, Any] = {"name": run_dir.name, "group": run_dir.name}
            if not os.environ.get("WANDB_DIR"):
                (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
                options["dir"] = str(run_dir)
            chosen.append(WandBTracker(os.environ.get("WANDB_PROJECT", PROJECT), **options))
        elif name == "mlflow":
            import mlflow
            from accelerate.tracking import MLflowTracker

            if not os.environ.get("MLFLOW_TRACKING_URI") and not mlflow.tracking.is_tracking_uri_set():
                mlflow.set_tracking_uri((Path(cfg.output_dir) / "mlruns").resolve().as_uri())
            if mlflow.get_tracking_uri().startswith(("file:", "/", ".")):  # a directory: MLflow's file store
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            chosen.append(MLflowTracker(experiment_name=PROJECT, run_name=run_dir.name))
        else:
            chosen.append(name)
    return chosen or None


def flat_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config as flat ``section.key`` scalars (what trackers accept as hyperparameters)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out
