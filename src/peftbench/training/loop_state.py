"""What the training loop carries across a pre-emption: where and how often it saves (:class:`Checkpointing`),
the prepared objects its helpers share (:class:`Prepared`), and saving and restoring a checkpoint of where it
stands (:func:`save_progress`, :func:`restore_progress`), every rank taking part and the main process writing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from torch import nn

from peftbench.config import TrainConfig
from peftbench.errors import PeftbenchError
from peftbench.memory.measure import PeakTracker
from peftbench.methods import TrainingHooks, trainable_parameters
from peftbench.training.callbacks import CallbackList
from peftbench.training.checkpoint import (
    SHARDS,
    Checkpoint,
    capture_rng_state,
    load_checkpoint,
    new_checkpoint_dir,
    prune_best,
    restore_rng_state,
    save_checkpoint,
)
from peftbench.training.fsdp import Sharding, gather_trainable, load_shards, save_shards
from peftbench.training.state import Progress

log = logging.getLogger("peftbench.training.trainer")  # the run log names the trainer, as before this module split


@dataclass
class Checkpointing:
    """Where and how often ``fit`` saves, and what it resumes from."""

    run_dir: Path
    every: int
    """Save every this many optimizer steps (0: only when stopped by a signal)."""
    keep: int
    """Newest checkpoints kept."""
    config_hash: str
    versions: dict[str, str]
    resume: Checkpoint | None = None
    """A validated checkpoint to continue from."""


@dataclass
class Prepared:
    """What the training loop's helpers share: the prepared model, optimizer and scheduler, and the run's settings
    (built by ``trainer._prepare``)."""

    accelerator: Accelerator
    model: nn.Module
    """Prepared: wrapped by accelerate (DDP), or sharded in place (FSDP2)."""
    optimizer: torch.optim.Optimizer
    scheduler: Any
    params: list[nn.Parameter]
    """The prepared model's trainable parameters (their gradients are clipped)."""
    train: TrainConfig
    steps: int
    seed: int
    checkpointing: Checkpointing | None
    sharding: Sharding | None
    hooks: TrainingHooks | None
    """The method's per-step hooks."""
    notify: CallbackList
    memory: PeakTracker | None = None
    """The run's peak-memory tracker (started by ``fit``)."""


def checkpoint_due(t: Prepared, step: int, stopping: bool) -> bool:
    """A checkpoint at ``step``: every ``checkpointing.every`` steps, or when stopping; not after the last step
    (the trained weights follow it)."""
    ck = t.checkpointing
    if ck is None:
        return False
    periodic = ck.every > 0 and step % ck.every == 0
    return (stopping or periodic) and step < t.steps


def save_progress(t: Prepared, p: Progress, running: torch.Tensor, start: float) -> None:
    """Saves where the loop stands (with every rank's loss sum and the training time so far), then prunes
    ``best/`` to the best step's weights."""
    assert t.checkpointing is not None
    snapshot = dataclasses.replace(
        p,
        running=running.item(),
        running_per_rank=gather_object([running.item()]) if t.accelerator.num_processes > 1 else [],
        train_time_s=p.train_time_s + time.perf_counter() - start,
        peak_memory_bytes=max(p.peak_memory_bytes, t.memory.result().peak_bytes if t.memory else 0),
    )
    _save(t, snapshot)
    if t.accelerator.is_main_process:
        prune_best(t.checkpointing.run_dir, p.best[0] if p.best else None)


def trainable_weights(t: Prepared) -> dict[str, torch.Tensor]:
    """The trainable weights, whole, for the main process to write (sharded: gathered; every rank must call)."""
    if t.sharding is not None:
        return gather_trainable(t.model)
    return trainable_parameters(t.accelerator.unwrap_model(t.model)) if t.accelerator.is_main_process else {}


def _save(t: Prepared, snapshot: Progress) -> None:
    """Saves one checkpoint (all ranks contribute their RNG state; the main process writes). Sharded: every rank
    writes its shard into the main process's temporary directory, then the main process completes it."""
    ck, accelerator, sharded = t.checkpointing, t.accelerator, t.sharding is not None
    assert ck is not None
    rng_states = gather_object([capture_rng_state()])
    tmp = None
    if sharded:
        names = [str(new_checkpoint_dir(ck.run_dir, snapshot.step)) if accelerator.is_main_process else ""]
        tmp = Path(broadcast_object_list(names, from_process=0)[0])
        save_shards(t.model, t.optimizer, tmp / SHARDS)
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        path = save_checkpoint(
            ck.run_dir,
            snapshot.step,
            trainable=None if sharded else trainable_parameters(accelerator.unwrap_model(t.model)),
            optimizer=None if sharded else t.optimizer,
            scheduler=t.scheduler,
            sharded_tmp=tmp,
            trainer_state=snapshot.to_state(),
            rng_states=rng_states,
            config_hash=ck.config_hash,
            seed=t.seed,
            keep=ck.keep,
            versions=ck.versions,
            scaler=accelerator.scaler,
            method_state=t.hooks.state_dict() if t.hooks is not None else None,
            on_file_written=t.notify.on_checkpoint_file,
        )
        log.info("saved %s", path.name)
    accelerator.wait_for_everyone()


def restore_progress(t: Prepared, ckpt: Checkpoint) -> Progress:
    """Loads a checkpoint into the prepared model/optimizer/scheduler and restores this rank's RNGs."""
    accelerator = t.accelerator
    pieces = load_checkpoint(ckpt, accelerator.process_index)
    if t.sharding is not None:
        load_shards(t.model, t.optimizer, pieces["shards"])
    else:
        unwrapped = accelerator.unwrap_model(t.model)
        expected = set(trainable_parameters(unwrapped))
        if set(pieces["trainable"]) != expected:
            raise PeftbenchError(f"{ckpt.path}: its weights do not match the run's method")
        unwrapped.load_state_dict(pieces["trainable"], strict=False)
        t.optimizer.load_state_dict(pieces["optimizer"])
    t.scheduler.load_state_dict(pieces["scheduler"])
    if accelerator.scaler is not None and pieces.get("scaler") is not None:
        accelerator.scaler.load_state_dict(pieces["scaler"])
    if t.hooks is not None:
        t.hooks.load_state_dict(pieces["method_state"] or {})
    restore_rng_state(pieces["rng"])
    progress = Progress.from_state(pieces["trainer_state"])
    if len(progress.running_per_rank) == accelerator.num_processes:  # this rank's own loss sum (older: rank 0's)
        progress.running = progress.running_per_rank[accelerator.process_index]
    return progress
