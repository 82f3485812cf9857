"""The training loop: a straight-line accelerate loop (:func:`fit`) with its data order, schedule and progress.

Built on ``accelerate`` rather than ``transformers.Trainer`` because the run controls its own data order
(seeded length-grouped batches), its own checkpoints and its own stopping; accelerate still gives DDP,
DeepSpeed and FSDP under ``accelerate launch`` / ``torchrun``, mixed precision and gradient accumulation.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from peftbench.config import TrainConfig
from peftbench.data.collate import length_grouped_batches, training_batch, training_length, with_epoch_targets
from peftbench.data.tokenize import Features
from peftbench.errors import PeftbenchError
from peftbench.memory.measure import TENSOR_BYTES, PeakTracker, StepSample, tensor_roots
from peftbench.methods import TrainingHooks
from peftbench.training.callbacks import Callback, CallbackList
from peftbench.training.checkpoint import prune_best, save_best
from peftbench.training.fsdp import Sharding, gathered_root, shard_model
from peftbench.training.loop_state import (
    Checkpointing,
    Prepared,
    checkpoint_due,
    restore_progress,
    save_progress,
    trainable_weights,
)
from peftbench.training.preemption import Preempted, StopFlag
from peftbench.training.state import Progress, TrainResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """Optimisation settings after the method's defaults are filled in."""

    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float

    @classmethod
    def of(cls, train: TrainConfig) -> Schedule:
        """The learning rate, schedule and warm-up of a resolved config. The method's defaults are filled into
        unset fields once, when the config is loaded (:func:`peftbench.configure.config_from_dict`), so the
        saved config records what the run uses; an unresolved config is a one-line error, not a guess."""
        unset = [name for name in ("learning_rate", "lr_scheduler", "warmup_ratio") if getattr(train, name) is None]
        if unset:
            raise PeftbenchError(
                f"train.{', train.'.join(unset)} unset: build the config with peftbench.configure.config_from_dict "
                "or load_config, which fill in the method's defaults"
            )
        assert train.learning_rate is not None and train.lr_scheduler is not None and train.warmup_ratio is not None
        return cls(train.learning_rate, train.lr_scheduler, train.warmup_ratio)

    def warmup_steps(self, steps: int) -> int:
        """Warm-up steps of a run of ``steps`` optimizer steps."""
        return round(self.warmup_ratio * steps)


def total_steps(train: TrainConfig, num_examples: int, world_size: int = 1) -> int:
    """Optimizer steps of the run: ``max_steps``, or ``num_epochs`` times the optimizer steps of one epoch.

    An epoch is ``ceil(examples / (batch x world))`` batches per process; the last accumulation group of
    an epoch may be short, and still makes one optimizer step.
    """
    if train.max_steps is not None:
        return train.max_steps
    per_epoch = math.ceil(_epoch_batches(train, num_examples, world_size) / train.gradient_accumulation_steps)
    return max(1, math.ceil(train.num_epochs * per_epoch))


def _epoch_batches(train: TrainConfig, num_examples: int, world_size: int = 1) -> int:
    """Batches of one epoch, per process."""
    return math.ceil(num_examples / (train.per_device_batch_size * world_size))


def epoch_loader(
    features: Sequence[Features],
    train: TrainConfig,
    seed: int,
    epoch: int,
    pad_id: int,
    encoder_decoder: bool,
    skip: int = 0,
) -> DataLoader:
    """The DataLoader of one epoch, without its first ``skip`` batches; the order and each example's target (drawn
    afresh each epoch among its outputs, see :func:`~peftbench.data.collate.with_epoch_targets`) depend only on
    (seed, epoch). Length grouping uses the lengths with the epoch's targets."""
    features = with_epoch_targets(features, seed, epoch)
    lengths = [training_length(f, encoder_decoder) for f in features]
    batches = length_grouped_batches(lengths, train.per_device_batch_size, seed, epoch, train.group_by_length)
    collate = partial(training_batch, pad_id=pad_id, encoder_decoder=encoder_decoder)
    # A generator of its own: without one, every new iterator draws its worker seed from the global RNG, which
    # dropout uses too, so a run resumed mid-epoch (one more iterator) would see other dropout masks than an
    # uninterrupted one (tests/training/test_preemption.py, LoRA dropout 0.1).
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return DataLoader(list(features), batch_sampler=batches[skip:], collate_fn=collate, generator=generator)


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
    checkpointing: Checkpointing | None = None,
    stop: StopFlag | None = None,
    validate: Callable[[nn.Module], float] | None = None,
    hooks: Callable[[nn.Module, int], TrainingHooks] | None = None,
    callbacks: Sequence[Callback] = (),
    sharding: Sharding | None = None,
) -> TrainResult:
    """Trains ``model``'s trainable parameters on ``features``; returns the loss curve and timings.

    With ``checkpointing``, saves every ``every`` steps and, when ``stop`` is set by a signal, saves at the next
    optimizer-step boundary and raises ``Preempted``. Resuming restores weights, optimizer, scheduler, data position,
    loss accumulators and every RNG, so the run continues exactly as if never stopped. With ``validate`` (returns a
    score, higher is better) the model is scored every ``train.eval_steps`` steps, at every epoch's end and at the
    last step, and the best weights are kept in ``best/`` of the run directory
    (:func:`~peftbench.training.checkpoint.save_best`). ``hooks`` (a method's ``training_hooks``) builds the method's
    per-step hooks from the model and the run's step count; their state is checkpointed with the rest. ``callbacks``
    are told of every step's end and every checkpoint file written (:class:`~peftbench.training.callbacks.Callback`).
    With ``sharding`` the model is sharded in place with FSDP2 (:mod:`peftbench.training.fsdp`) and checkpoints are
    sharded; the caller's ``model`` stays sharded afterwards (:func:`~peftbench.training.fsdp.gather_trainable`
    gathers its weights). The result's peak memory is this run's own (:mod:`peftbench.memory.measure`): the CUDA
    allocator's peak from here on, or on CPU the tensor bytes live at once over the steps of the first and the
    largest batches (:class:`~peftbench.memory.measure.StepSample`; validation is not among them).
    """
    steps = total_steps(train, len(features), accelerator.num_processes)
    t, p = _prepare(model, train, schedule, accelerator, steps, seed, checkpointing, hooks, callbacks, sharding)
    running = torch.tensor(p.running, device=accelerator.device)  # summed on device: no per-step sync
    per_epoch = _epoch_batches(train, len(features), accelerator.num_processes)
    shown = progress and accelerator.is_main_process
    bar = tqdm(total=steps, initial=p.step, desc="train", unit="step", disable=not shown)
    t.memory = _memory_tracker(t)
    sample = StepSample(first=2 * train.gradient_accumulation_steps)
    start = time.perf_counter()
    while p.step < steps:
        for batch in _rest_of_epoch(t, p, features, pad_id, encoder_decoder):
            with t.memory.window() if sample(batch) else contextlib.nullcontext():
                running += _micro_step(t, batch, p.step)
            p.seen, p.batches_done = p.seen + 1, p.batches_done + 1
            if not accelerator.sync_gradients:
                continue
            p.step += 1
            bar.update(1)
            if p.step % train.logging_steps == 0 or p.step == steps:
                running = _log_loss(t, p, running, bar)
            t.notify.on_step_end(p.step, steps)
            if validate is not None and _validation_due(t, p.step, epoch_end=p.batches_done >= per_epoch):
                _validate(t, p, validate)
            stopping = _all_agree(stop is not None and stop.requested, accelerator)
            if checkpoint_due(t, p.step, stopping):
                save_progress(t, p, running, start)
            if stopping:
                raise Preempted("training")
            if p.step >= steps:
                break
        else:  # the epoch's batches ran out
            p.epoch, p.batches_done = p.epoch + 1, 0
    bar.close()
    return _finish(t, p, schedule, len(features), start)


def _prepare(
    model: nn.Module,
    train: TrainConfig,
    schedule: Schedule,
    accelerator: Accelerator,
    steps: int,
    seed: int,
    checkpointing: Checkpointing | None,
    hooks: Callable[[nn.Module, int], TrainingHooks] | None,
    callbacks: Sequence[Callback],
    sharding: Sharding | None,
) -> tuple[Prepared, Progress]:
    """Shards the model (with ``sharding``), builds the method's hooks, the optimizer and the schedule, prepares
    them with accelerate, and restores the checkpoint to resume from; returns them with the loop's resumable state
    (at step 0 without one)."""
    if sharding is not None:
        model = shard_model(model, sharding, train.mixed_precision, accelerator.device)
    method_hooks = hooks(model, steps) if hooks is not None else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=schedule.learning_rate, weight_decay=train.weight_decay)
    # accelerate steps a prepared scheduler once per process, hence the scaling by num_processes.
    n = accelerator.num_processes
    warmup = schedule.warmup_steps(steps)
    scheduler = get_scheduler(
        schedule.lr_scheduler, optimizer, num_warmup_steps=warmup * n, num_training_steps=steps * n
    )
    if sharding is None:
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    else:  # already sharded: accelerate must not wrap it in DDP
        optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    params = [p for p in model.parameters() if p.requires_grad]  # the prepared (possibly wrapped) ones
    prepared = Prepared(
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        params=params,
        train=train,
        steps=steps,
        seed=seed,
        checkpointing=checkpointing,
        sharding=sharding,
        hooks=method_hooks,
        notify=CallbackList(callbacks),
    )
    return prepared, _resume(prepared)


def _memory_tracker(t: Prepared) -> PeakTracker:
    """The run's own peak-memory tracker (:mod:`peftbench.memory.measure`), started now: on CUDA the allocator's
    peak is reset; on CPU the steps of the batches :class:`~peftbench.memory.measure.StepSample` picks are tracked,
    from the weights, buffers, gradients and optimizer state live at each such step."""
    optimizer = getattr(t.optimizer, "optimizer", t.optimizer)  # accelerate's wrapper holds the torch optimizer
    return PeakTracker(t.accelerator.device, tensor_roots(t.model, optimizer=optimizer)).start()


def _resume(t: Prepared) -> Progress:
    """Where the loop starts: the checkpoint's progress when resuming (weights, optimizer, scheduler and RNGs
    restored), else step 0; the model is put in training mode."""
    progress = Progress()
    resume = t.checkpointing.resume if t.checkpointing is not None else None
    if resume is not None:
        progress = restore_progress(t, resume)
        log.info("resumed from %s at step %d", resume.path.name, progress.step)
    t.model.train()
    return progress


def _rest_of_epoch(
    t: Prepared, p: Progress, features: Sequence[Features], pad_id: int, encoder_decoder: bool
) -> DataLoader:
    """The current epoch's batches not yet trained on, prepared by accelerate (the next epoch's, when a checkpoint
    was saved right at the end of an epoch)."""
    n = t.accelerator.num_processes
    if p.batches_done >= _epoch_batches(t.train, len(features), n):  # saved right at the end of an epoch
        p.epoch, p.batches_done = p.epoch + 1, 0
    return t.accelerator.prepare_data_loader(
        epoch_loader(features, t.train, t.seed, p.epoch, pad_id, encoder_decoder, skip=p.batches_done * n),
        device_placement=True,
    )


def _micro_step(t: Prepared, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
    """One batch forward and backward; at the end of an accumulation group, the optimizer step (gradients clipped)
    and the method's hooks. Returns the batch's loss, detached, in fp32."""
    accelerator = t.accelerator
    with accelerator.accumulate(t.model):
        loss = t.model(**batch).loss
        accelerator.backward(loss)
        if accelerator.sync_gradients and t.train.max_grad_norm > 0:
            accelerator.clip_grad_norm_(t.params, t.train.max_grad_norm)
        t.optimizer.step()
        t.scheduler.step()
        if t.hooks is not None and accelerator.sync_gradients:
            t.hooks.after_step(step + 1)  # before the gradients are cleared
        t.optimizer.zero_grad(set_to_none=True)
    return loss.detach().float()


def _log_loss(t: Prepared, p: Progress, running: torch.Tensor, bar: tqdm) -> torch.Tensor:
    """Records, shows and logs the mean loss since the last logging step; returns the emptied loss sum."""
    mean = _mean_over_ranks(running, t.accelerator).item() / max(p.seen, 1)
    p.losses.append((p.step, mean))
    bar.set_postfix(loss=f"{mean:.4f}")
    log.info("step %d/%d loss %.4f lr %.3g", p.step, t.steps, mean, t.scheduler.get_last_lr()[0])
    t.accelerator.log({"train/loss": mean, "train/learning_rate": t.scheduler.get_last_lr()[0]}, step=p.step)
    p.seen = 0
    return torch.zeros((), device=t.accelerator.device)


def _mean_over_ranks(running: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """The loss sum averaged over ranks (each rank sums its own micro-batches, the same number on every rank), so
    that the logged loss is the global batch's, as one process with gradient accumulation logs it; one all-reduce
    per logging step."""
    if accelerator.num_processes == 1:
        return running
    return accelerator.reduce(running, reduction="mean")


def _validation_due(t: Prepared, step: int, epoch_end: bool) -> bool:
    """Every ``eval_steps``, at each epoch's end and at the end of training (the study validates at eval_steps and
    epoch ends); never with ``eval_steps`` 0."""
    every = t.train.eval_steps
    return every > 0 and (step % every == 0 or step == t.steps or epoch_end)


def _validate(t: Prepared, p: Progress, validate: Callable[[nn.Module], float]) -> None:
    """Scores the model on the validation tasks at step ``p.step``; with checkpointing, a new best score's weights
    are kept in ``best/`` for the test evaluation."""
    with gathered_root(t.model):  # sharded: every rank generates the same batches
        score = validate(t.accelerator.unwrap_model(t.model))
    p.validation.append((p.step, score))
    log.info("step %d validation score %.4f", p.step, score)
    t.accelerator.log({"validation/rougeL": score}, step=p.step)
    if t.checkpointing is not None and (p.best is None or score > p.best[1]):
        p.best = (p.step, score)
        trainable = trainable_weights(t)
        if t.accelerator.is_main_process:
            save_best(t.checkpointing.run_dir, p.step, score, "rougeL", trainable)


def _all_agree(flag: bool, accelerator: Accelerator) -> bool:
    """True on every rank if it is true on any: all ranks stop at the same step."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), reduction="max").item())


def _finish(t: Prepared, p: Progress, schedule: Schedule, num_examples: int, start: float) -> TrainResult:
    """What the training reports, once ``best/`` is pruned to the best step's weights."""
    if t.checkpointing is not None and t.accelerator.is_main_process:
        prune_best(t.checkpointing.run_dir, p.best[0] if p.best else None)
    elapsed = p.train_time_s + time.perf_counter() - start
    assert t.memory is not None
    memory = t.memory.close()
    examples_done = p.batches_done * t.train.per_device_batch_size * t.accelerator.num_processes
    return TrainResult(
        steps=p.step,
        epochs=round(p.epoch + examples_done / max(num_examples, 1), 4),
        train_time_s=round(elapsed, 3),
        learning_rate=schedule.learning_rate,
        lr_scheduler=schedule.lr_scheduler,
        warmup_steps=schedule.warmup_steps(t.steps),
        losses=p.losses,
        peak_memory_mb=round(max(memory.peak_bytes, p.peak_memory_bytes) / 2**20, 1),
        peak_memory_kind=memory.kind,
        peak_memory_baseline_mb=memory.baseline_mb,
        memory_tracked_batches=memory.windows if memory.kind == TENSOR_BYTES else None,
        validation=list(p.validation),
        best_step=p.best[0] if p.best else None,
        processes=t.accelerator.num_processes,
    )
