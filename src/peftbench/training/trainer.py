"""The training loop: a straight-line accelerate loop (:func:`fit`) with its data order, schedule and progress.

Built on ``accelerate`` rather than ``transformers.Trainer`` because the run controls its own data order
(seeded length-grouped batches), its own checkpoints and its own stopping; accelerate still gives DDP,
DeepSpeed and FSDP under ``accelerate launch`` / ``torchrun``, mixed precision and gradient accumulation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from peftbench.config import TrainConfig
from peftbench.data.collate import Features, length_grouped_batches, training_batch, training_length, with_epoch_targets
from peftbench.errors import PeftbenchError
from peftbench.io import peak_memory_mb
from peftbench.methods import TrainingHooks, trainable_parameters
from peftbench.training.callbacks import Callback, CallbackList
from peftbench.training.checkpoint import (
    SHARDS,
    Checkpoint,
    capture_rng_state,
    load_checkpoint,
    new_checkpoint_dir,
    prune_best,
    restore_rng_state,
    save_best,
    save_checkpoint,
)
from peftbench.training.fsdp import Sharding, gather_trainable, gathered_root, load_shards, save_shards, shard_model
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


def _mean_over_ranks(running: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """The loss sum averaged over ranks (each rank sums its own micro-batches, the same number on every rank), so
    that the logged loss is the global batch's, as one process with gradient accumulation logs it; one all-reduce
    per logging step."""
    if accelerator.num_processes == 1:
        return running
    return accelerator.reduce(running, reduction="mean")


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

    With ``checkpointing``, saves every ``every`` steps and, when ``stop`` is set by a signal, saves at the
    next optimizer-step boundary and raises ``Preempted``. Resuming restores weights, optimizer, scheduler,
    data position, loss accumulators and every RNG, so the run continues exactly as if never stopped.
    With ``validate`` (returns a score, higher is better) the model is scored every ``train.eval_steps``
    steps, at every epoch's end and at the last step, and the best weights are kept in ``best/`` of the run
    directory (:func:`~peftbench.training.checkpoint.save_best`). ``hooks`` (a method's
    ``training_hooks``) builds the method's per-step hooks from the model and the run's step count; their
    state is checkpointed with the rest. ``callbacks`` are told of every step's end and every checkpoint
    file written (:class:`~peftbench.training.callbacks.Callback`). With ``sharding`` the model is sharded in
    place with FSDP2 (:mod:`peftbench.training.fsdp`) and checkpoints are sharded; the caller's ``model``
    stays sharded afterwards (:func:`~peftbench.training.fsdp.gather_trainable` gathers its weights).
    """
    steps = total_steps(train, len(features), accelerator.num_processes)
    warmup = round(schedule.warmup_ratio * steps)
    if sharding is not None:
        model = shard_model(model, sharding, train.mixed_precision, accelerator.device)
    method_hooks = hooks(model, steps) if hooks is not None else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=schedule.learning_rate, weight_decay=train.weight_decay)
    # accelerate steps a prepared scheduler once per process, hence the scaling by num_processes.
    n = accelerator.num_processes
    scheduler = get_scheduler(
        schedule.lr_scheduler, optimizer, num_warmup_steps=warmup * n, num_training_steps=steps * n
    )
    if sharding is None:
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    else:  # already sharded: accelerate must not wrap it in DDP
        optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    params = [p for p in model.parameters() if p.requires_grad]  # the prepared (possibly wrapped) ones
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    shown, progress = progress, Progress()  # the flag, then the loop's resumable state
    if checkpointing is not None and checkpointing.resume is not None:
        progress = _restore(checkpointing.resume, model, optimizer, scheduler, accelerator, method_hooks, sharding)
        log.info("resumed from %s at step %d", checkpointing.resume.path.name, progress.step)
    model.train()

    step, epoch, seen = progress.step, progress.epoch, progress.seen
    running = torch.tensor(progress.running, device=accelerator.device)  # summed on device: no per-step sync
    losses = progress.losses
    batches_done, last_saved = progress.batches_done, step
    notify = CallbackList(callbacks)
    bar = tqdm(
        total=steps, initial=step, desc="train", unit="step", disable=not (shown and accelerator.is_main_process)
    )
    start = time.perf_counter()
    while step < steps:
        epoch_batches = math.ceil(len(features) / (train.per_device_batch_size * n))
        if batches_done >= epoch_batches:  # saved right at the end of an epoch
            epoch, batches_done = epoch + 1, 0
        loader = accelerator.prepare_data_loader(
            epoch_loader(features, train, seed, epoch, pad_id, encoder_decoder, skip=batches_done * n),
            device_placement=True,
        )
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and train.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                if method_hooks is not None and accelerator.sync_gradients:
                    method_hooks.after_step(step + 1)  # before the gradients are cleared
                optimizer.zero_grad(set_to_none=True)
            running += loss.detach().float()
            seen += 1
            batches_done += 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if step % train.logging_steps == 0 or step == steps:
                mean = _mean_over_ranks(running, accelerator).item() / max(seen, 1)
                losses.append((step, mean))
                bar.set_postfix(loss=f"{mean:.4f}")
                log.info("step %d/%d loss %.4f lr %.3g", step, steps, mean, scheduler.get_last_lr()[0])
                accelerator.log({"train/loss": mean, "train/learning_rate": scheduler.get_last_lr()[0]}, step=step)
                running, seen = torch.zeros((), device=accelerator.device), 0
            notify.on_step_end(step, steps)
            # every eval_steps, at each epoch's end and at the end of training (the study validates at
            # eval_steps and epoch ends); the best score's weights are kept for the test evaluation
            epoch_end = batches_done >= epoch_batches
            if validate is not None and train.eval_steps > 0 and (step % train.eval_steps == 0 or step == steps
                                                                  or epoch_end):  # fmt: skip
                with gathered_root(model):  # sharded: every rank generates the same batches
                    score = validate(accelerator.unwrap_model(model))
                progress.validation.append((step, score))
                log.info("step %d validation score %.4f", step, score)
                accelerator.log({"validation/rougeL": score}, step=step)
                if checkpointing is not None and (progress.best is None or score > progress.best[1]):
                    progress.best = (step, score)
                    trainable = _trainable(model, accelerator, sharding)
                    if accelerator.is_main_process:
                        save_best(checkpointing.run_dir, step, score, "rougeL", trainable)
            stopping = _all_agree(stop is not None and stop.requested, accelerator)
            periodic = checkpointing is not None and checkpointing.every > 0 and step % checkpointing.every == 0
            if checkpointing is not None and (stopping or periodic) and step < steps and step != last_saved:
                snapshot = Progress(
                    step=step,
                    epoch=epoch,
                    batches_done=batches_done,
                    running=running.item(),
                    running_per_rank=gather_object([running.item()]) if accelerator.num_processes > 1 else [],
                    seen=seen,
                    losses=losses,
                    best=progress.best,
                    validation=progress.validation,
                    train_time_s=progress.train_time_s + time.perf_counter() - start,
                )
                _save(checkpointing, snapshot, model, optimizer, scheduler, accelerator, seed, method_hooks, notify,
                      sharding)  # fmt: skip
                last_saved = step
                if accelerator.is_main_process:
                    prune_best(checkpointing.run_dir, progress.best[0] if progress.best else None)
            if stopping:
                raise Preempted("training")
            if step >= steps:
                break
        else:
            epoch += 1
            batches_done = 0
            continue
        break
    bar.close()
    if checkpointing is not None and accelerator.is_main_process:
        prune_best(checkpointing.run_dir, progress.best[0] if progress.best else None)
    elapsed = progress.train_time_s + time.perf_counter() - start
    peak, peak_kind = peak_memory_mb(accelerator.device)
    return TrainResult(
        steps=step,
        epochs=round(epoch + batches_done * train.per_device_batch_size * n / max(len(features), 1), 4),
        train_time_s=round(elapsed, 3),
        learning_rate=schedule.learning_rate,
        lr_scheduler=schedule.lr_scheduler,
        warmup_steps=warmup,
        losses=losses,
        peak_memory_mb=peak,
        peak_memory_kind=peak_kind,
        validation=list(progress.validation),
        best_step=progress.best[0] if progress.best else None,
    )


def _all_agree(flag: bool, accelerator: Accelerator) -> bool:
    """True on every rank if it is true on any: all ranks stop at the same step."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), reduction="max").item())


def _trainable(model: nn.Module, accelerator: Accelerator, sharding: Sharding | None) -> dict[str, torch.Tensor]:
    """The trainable weights, whole, for the main process to write (sharded: gathered; every rank must call)."""
    if sharding is not None:
        return gather_trainable(model)
    return trainable_parameters(accelerator.unwrap_model(model)) if accelerator.is_main_process else {}


def _save(
    ck: Checkpointing, snapshot: Progress, model: nn.Module, optimizer, scheduler, accelerator: Accelerator, seed: int,
    hooks: TrainingHooks | None = None, callback: Callback | None = None, sharding: Sharding | None = None,
) -> None:  # fmt: skip
    """Saves one checkpoint (all ranks contribute their RNG state; the main process writes). Sharded: every rank
    writes its shard into the main process's temporary directory, then the main process completes it."""
    rng_states = gather_object([capture_rng_state()])
    tmp = None
    if sharding is not None:
        names = [str(new_checkpoint_dir(ck.run_dir, snapshot.step)) if accelerator.is_main_process else ""]
        tmp = Path(broadcast_object_list(names, from_process=0)[0])
        save_shards(model, optimizer, tmp / SHARDS)
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        trainable = trainable_parameters(accelerator.unwrap_model(model)) if sharding is None else None
        path = save_checkpoint(
            ck.run_dir, snapshot.step, trainable=trainable, optimizer=optimizer if sharding is None else None,
            scheduler=scheduler, sharded_tmp=tmp,
            trainer_state=snapshot.to_state(), rng_states=rng_states, config_hash=ck.config_hash, seed=seed,
            keep=ck.keep, versions=ck.versions, scaler=accelerator.scaler,
            method_state=hooks.state_dict() if hooks is not None else None,
            on_file_written=callback.on_checkpoint_file if callback is not None else None,
        )  # fmt: skip
        log.info("saved %s", path.name)
    accelerator.wait_for_everyone()


def _restore(
    ckpt: Checkpoint, model: nn.Module, optimizer, scheduler, accelerator: Accelerator, hooks: TrainingHooks | None,
    sharding: Sharding | None = None,
) -> Progress:  # fmt: skip
    """Loads a checkpoint into the prepared model/optimizer/scheduler and restores this rank's RNGs."""
    pieces = load_checkpoint(ckpt, accelerator.process_index)
    if sharding is not None:
        load_shards(model, optimizer, pieces["shards"])
    else:
        unwrapped = accelerator.unwrap_model(model)
        expected = set(trainable_parameters(unwrapped))
        if set(pieces["trainable"]) != expected:
            raise PeftbenchError(f"{ckpt.path}: its weights do not match the run's method")
        unwrapped.load_state_dict(pieces["trainable"], strict=False)
        optimizer.load_state_dict(pieces["optimizer"])
    scheduler.load_state_dict(pieces["scheduler"])
    if accelerator.scaler is not None and pieces.get("scaler") is not None:
        accelerator.scaler.load_state_dict(pieces["scaler"])
    if hooks is not None:
        hooks.load_state_dict(pieces["method_state"] or {})
    restore_rng_state(pieces["rng"])
    progress = Progress.from_state(pieces["trainer_state"])
    if len(progress.running_per_rank) == accelerator.num_processes:  # this rank's own loss sum (older: rank 0's)
        progress.running = progress.running_per_rank[accelerator.process_index]
    return progress
