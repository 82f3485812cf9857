"""The training loop: accelerate, straight-line, one screen.

Built on ``accelerate`` rather than ``transformers.Trainer`` because the run controls its own data order
(seeded length-grouped batches), its own checkpoints and its own stopping; accelerate still gives DDP,
DeepSpeed and FSDP under ``accelerate launch`` / ``torchrun``, mixed precision and gradient accumulation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from peftbench.config import TrainConfig
from peftbench.data.collate import Features, length_grouped_batches, training_batch, training_length
from peftbench.io import peak_memory_mb
from peftbench.methods import MethodSpec

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What training reports."""

    steps: int
    epochs: float
    train_time_s: float
    learning_rate: float
    lr_scheduler: str
    warmup_steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    """(step, mean loss since the previous log) pairs."""
    peak_memory_mb: float = 0.0
    """Peak memory while training: CUDA allocator peak (reset at the start), else the process's peak RSS."""
    peak_memory_kind: str = ""
    """Which of the two ``peak_memory_mb`` is."""


@dataclass(frozen=True)
class Schedule:
    """Optimisation settings after the method's defaults are filled in."""

    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float


def resolve_schedule(train: TrainConfig, spec: MethodSpec) -> Schedule:
    """The run's learning rate, schedule and warm-up: the config's where set, else the method's defaults."""
    return Schedule(
        learning_rate=train.learning_rate if train.learning_rate is not None else spec.default_learning_rate,
        lr_scheduler=train.lr_scheduler or spec.lr_scheduler,
        warmup_ratio=train.warmup_ratio if train.warmup_ratio is not None else spec.warmup_ratio,
    )


def total_steps(train: TrainConfig, num_examples: int, world_size: int = 1) -> int:
    """Optimizer steps of the run: ``max_steps``, or ``num_epochs`` times the optimizer steps of one epoch.

    An epoch is ``ceil(examples / (batch x world))`` batches per process; the last accumulation group of
    an epoch may be short, and still makes one optimizer step.
    """
    if train.max_steps is not None:
        return train.max_steps
    batches = math.ceil(num_examples / (train.per_device_batch_size * world_size))
    per_epoch = math.ceil(batches / train.gradient_accumulation_steps)
    return max(1, math.ceil(train.num_epochs * per_epoch))


def epoch_loader(
    features: Sequence[Features], train: TrainConfig, seed: int, epoch: int, pad_id: int, encoder_decoder: bool
) -> DataLoader:
    """The DataLoader of one epoch; its batch order depends only on (seed, epoch)."""
    lengths = [training_length(f, encoder_decoder) for f in features]
    batches = length_grouped_batches(lengths, train.per_device_batch_size, seed, epoch, train.group_by_length)
    collate = partial(training_batch, pad_id=pad_id, encoder_decoder=encoder_decoder)
    return DataLoader(list(features), batch_sampler=batches, collate_fn=collate)


def fit(
    model: nn.Module,
    features: Sequence[Features],
    train: TrainConfig,
    schedule: Schedule,
    accelerator: Accelerator,
    *,
    seed: int,
    pad_id: int,
    encoder_decoder: bool,
    progress: bool = True,
) -> TrainResult:
    """Trains ``model``'s trainable parameters on ``features``; returns the loss curve and timings."""
    steps = total_steps(train, len(features), accelerator.num_processes)
    warmup = round(schedule.warmup_ratio * steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=schedule.learning_rate, weight_decay=train.weight_decay)
    # accelerate steps a prepared scheduler once per process, hence the scaling by num_processes.
    n = accelerator.num_processes
    scheduler = get_scheduler(
        schedule.lr_scheduler, optimizer, num_warmup_steps=warmup * n, num_training_steps=steps * n
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    params = [p for p in model.parameters() if p.requires_grad]  # the prepared (possibly wrapped) ones
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    model.train()

    step, epoch, seen = 0, 0, 0
    running = torch.zeros((), device=accelerator.device)  # summed on device: no host sync per step
    losses: list[tuple[int, float]] = []
    bar = tqdm(total=steps, desc="train", unit="step", disable=not (progress and accelerator.is_main_process))
    start = time.perf_counter()
    while step < steps:
        loader = accelerator.prepare_data_loader(
            epoch_loader(features, train, seed, epoch, pad_id, encoder_decoder), device_placement=True
        )
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and train.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running += loss.detach().float()
            seen += 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if step % train.logging_steps == 0 or step == steps:
                mean = running.item() / max(seen, 1)
                losses.append((step, mean))
                bar.set_postfix(loss=f"{mean:.4f}")
                log.info("step %d/%d loss %.4f lr %.3g", step, steps, mean, scheduler.get_last_lr()[0])
                running, seen = torch.zeros((), device=accelerator.device), 0
            if step >= steps:
                break
        epoch += 1
    bar.close()
    elapsed = time.perf_counter() - start
    peak, peak_kind = peak_memory_mb(accelerator.device)
    return TrainResult(
        steps=step,
        epochs=round(
            step * train.per_device_batch_size * n * train.gradient_accumulation_steps / max(len(features), 1), 4
        ),
        train_time_s=round(elapsed, 3),
        learning_rate=schedule.learning_rate,
        lr_scheduler=schedule.lr_scheduler,
        warmup_steps=warmup,
        losses=losses,
        peak_memory_mb=peak,
        peak_memory_kind=peak_kind,
    )
