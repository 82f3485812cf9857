"""The weights the test split is scored with: after training, the best validation checkpoint or the last weights
(:func:`choose_test_weights`, rank 0 choosing and saving them, :func:`share_weights` giving them to the other
ranks); on a resumed run whose training had finished, the weights it saved (:func:`finished_training`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from torch import nn

from peftbench.config import ExperimentConfig
from peftbench.errors import PeftbenchError
from peftbench.io import file_sha256
from peftbench.methods import trainable_parameters
from peftbench.recipe.output import say
from peftbench.recipe.rundir import check_weights, load_trainable, save_trainable
from peftbench.recipe.runfiles import LAST_WEIGHTS_FILE, WEIGHTS_FILE, RunState
from peftbench.recipe.start import Run
from peftbench.training.checkpoint import load_best
from peftbench.training.state import TrainResult
from peftbench.weights import apply_trainable


@dataclass
class Trained:
    """A trained model, ready for the test: unwrapped and whole, on the run's device."""

    model: nn.Module
    result: TrainResult
    weights: dict[str, Any] | None = None
    """Which weights the test is scored with (``metrics.json["weights"]``); None until chosen, and on every rank
    but the main process."""


def finished_training(run: Run, state: RunState) -> Trained | None:
    """The run's model with the weights a finished training saved, when the run's state says training finished and
    they read back whole; None otherwise, and the run then resumes from its newest valid checkpoint."""
    if not _trained_weights(run.model, state, run.run_dir, run.quiet):
        return None
    run.model.to(run.accelerator.device)
    trained = Trained(run.model, TrainResult(**state["train"]), state.get("weights"))
    say("training had finished; continuing the evaluation", run.quiet)
    return trained


def _trained_weights(model: nn.Module, state: RunState, run_dir: Path, quiet: bool) -> bool:
    """Loads the weights a finished training saved, when the run's state says training finished and they read
    back whole; False otherwise, and the run then resumes from its newest valid checkpoint (damaged weights are
    kept aside as ``trainable.safetensors.damaged``, never deleted)."""
    path = run_dir / WEIGHTS_FILE
    if not state.get("trained") or not path.is_file() or not isinstance(state.get("train"), dict):
        return False
    try:
        check_weights(run_dir)  # against the SHA-256 run_state.json recorded when they were saved
        load_trainable(model, path)
        TrainResult(**state["train"])
    except (PeftbenchError, TypeError) as exc:
        os.replace(path, path.with_name(path.name + ".damaged"))
        say(f"{path.name} cannot be used ({str(exc).splitlines()[0]}); set aside, resuming from the checkpoints", quiet)
        return False
    return True


def choose_test_weights(run: Run, trained: Trained, state: RunState) -> Trained:
    """The main process puts the weights the test is scored with into the model (:func:`select_test_weights`),
    saves them as ``trainable.safetensors`` and records the finished training in the run's state; the other ranks
    get them before the test (:func:`share_weights`)."""
    if not run.accelerator.is_main_process:
        return trained
    model, cfg, run_dir = trained.model, run.cfg, run.run_dir
    weights = select_test_weights(model, cfg, trained.result, run_dir)
    say(weights["note"], run.quiet)
    save_trainable(model, run_dir / WEIGHTS_FILE, cfg)
    state.update(
        trained=True,
        train=asdict(trained.result),
        weights=weights,
        weights_sha256=file_sha256(run_dir / WEIGHTS_FILE),
    )
    state.save()
    return dataclasses.replace(trained, weights=weights)


def select_test_weights(model: nn.Module, cfg: ExperimentConfig, result: TrainResult, run_dir: Path) -> dict[str, Any]:
    """Puts the weights the test split is scored with into ``model``, as the study does: the best validation
    checkpoint (``eval.weights: best``, when validation ran), else the last weights. The last weights are
    kept as ``last.safetensors`` when the best ones replace them. Returns what ``metrics.json["weights"]``
    records: which weights, their step and validation ROUGE-L, and a plain sentence."""
    scores = dict(result.validation)
    last = {
        "used": "last",
        "step": result.steps,
        "validation_rougeL": scores.get(result.steps),
        "last_step": result.steps,
    }
    if cfg.eval.weights == "last":
        return {**last, "note": f"test scored with the last weights (step {result.steps}; eval.weights=last)"}
    if result.best_step is None:
        return {
            **last,
            "note": "no validation tasks (data.num_validation_tasks or train.eval_steps is 0): "
            f"the test is scored with the last weights (step {result.steps})",
        }
    tensors, score = load_best(run_dir, result.best_step)
    if result.best_step != result.steps:
        save_trainable(model, run_dir / LAST_WEIGHTS_FILE, cfg)
        apply_trainable(model, tensors, str(run_dir / "best"))
    return {
        "used": "best",
        "step": result.best_step,
        "validation_rougeL": score,
        "last_step": result.steps,
        "note": f"test scored with the best validation weights: step {result.best_step} of {result.steps}, "
        f"validation ROUGE-L {score:.2f}",
    }


def share_weights(model: nn.Module, accelerator: Accelerator) -> None:
    """Rank 0's trainable weights on every rank, before a sharded test evaluation: rank 0 alone loads the
    best validation weights (:func:`select_test_weights`)."""
    import torch.distributed as dist

    for param in trainable_parameters(model).values():
        data = param.data.to(accelerator.device)
        dist.broadcast(data, src=0)
        param.data.copy_(data)
