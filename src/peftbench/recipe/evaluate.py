"""Scoring a run's test split from what is on disk: a run re-evaluated (``peftbench evaluate``,
:func:`evaluate_run`) and the base model alone, the baseline row of a comparison (:func:`evaluate_untrained`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from transformers import PreTrainedTokenizerBase

from peftbench.config import ExperimentConfig, dump_config
from peftbench.io import atomic_write_text
from peftbench.methods import get_method
from peftbench.models import base_parameters, count_parameters
from peftbench.recipe.output import RunResult, run_log, say
from peftbench.recipe.rundir import (
    check_base,
    check_same_config,
    check_weights,
    load_trainable,
    read_run_config,
    record_base,
    run_dir_for,
)
from peftbench.recipe.runfiles import CONFIG_FILE, LOG_FILE, WEIGHTS_FILE, finished_metrics, headline
from peftbench.recipe.scoring import evaluate_and_write
from peftbench.recipe.setup import BASE_SHA_ATTR, build_model, prepare_data
from peftbench.training.callbacks import Callback, CallbackList, installed_callbacks
from peftbench.training.state import TrainResult


def evaluate(
    cfg: ExperimentConfig,
    run_dir: Path,
    *,
    untrained: bool = False,
    previous: dict[str, Any] | None = None,
    progress: bool = True,
    quiet: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Scores the test split from what is on disk: the base model alone (``untrained``, the baseline row of a
    comparison) or the base with the run's saved trainable weights. On the GPU when there is one.

    ``previous`` is the run's earlier ``metrics.json``: a re-evaluation keeps its training record (time, peak
    memory, which weights) and replaces the scores.
    """
    previous = previous or {}
    # under torchrun / accelerate launch, every rank generates a share of the batches (rank 0 writes)
    accelerator = Accelerator(cpu=not torch.cuda.is_available()) if _launched_ranks() > 1 else None
    quiet = quiet or (accelerator is not None and not accelerator.is_main_process)
    with run_log(run_dir / LOG_FILE):
        set_seed(cfg.seed)
        model, tokenizer = _saved_model(cfg, run_dir, untrained)
        trainable, total = count_parameters(model)
        base = base_parameters(model)
        data = prepare_data(cfg, tokenizer, model, progress)
        device = accelerator.device if accelerator else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        spec = None if untrained else get_method(cfg.method_name)
        train = TrainResult(**previous["train"]) if previous.get("train") else None
        on_batch = CallbackList([*installed_callbacks(), *callbacks]).on_evaluation_batch
        metrics = evaluate_and_write(
            model,
            tokenizer,
            data.test,
            cfg,
            run_dir,
            device,
            spec=spec,
            progress=progress,
            train=train,
            params=(0 if untrained else trainable, total),
            base_params=base,
            data_stats=data.stats,
            weights=previous.get("weights"),
            on_batch=on_batch,
        )
        if metrics:
            say(headline(run_dir.name, metrics), quiet)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return RunResult(run_dir, metrics)


def _saved_model(cfg: ExperimentConfig, run_dir: Path, untrained: bool) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The base model, checked against the base weights the run recorded (and recorded, the first time), with the
    method and the run's saved trainable weights unless ``untrained``."""
    model, tokenizer = build_model(cfg, apply_method=not untrained, hash_base=True)
    check_base(run_dir, getattr(model, BASE_SHA_ATTR))  # scores of other base weights would be wrong
    record_base(run_dir, cfg, getattr(model, BASE_SHA_ATTR))
    if not untrained:
        check_weights(run_dir)
        load_trainable(model, run_dir / WEIGHTS_FILE, cfg)
    return model, tokenizer


def _launched_ranks() -> int:
    """Processes of the torchrun / accelerate launch job this process belongs to (1 when not launched so)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def evaluate_untrained(cfg: ExperimentConfig, *, progress: bool = True, quiet: bool = False) -> RunResult:
    """The base model without any method or training, scored into its own run directory (done once)."""
    run_dir = run_dir_for(cfg)
    if (run_dir / CONFIG_FILE).exists():
        check_same_config(run_dir, cfg)
    finished = finished_metrics(run_dir)
    if finished is not None:
        return RunResult(run_dir, finished, skipped=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, dump_config(cfg))
    return evaluate(cfg, run_dir, untrained=True, progress=progress, quiet=quiet)


def evaluate_run(run_dir: str | Path, *, progress: bool = True, quiet: bool = False) -> RunResult:
    """Re-evaluates a run (`peftbench evaluate`) from its ``config.yaml`` and saved trainable weights."""
    run_dir = Path(run_dir)
    previous = finished_metrics(run_dir) or {}
    untrained = previous.get("method") == "untrained"
    return evaluate(
        read_run_config(run_dir), run_dir, untrained=untrained, previous=previous, progress=progress, quiet=quiet
    )
