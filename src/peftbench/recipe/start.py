"""Where a run starts: its processes, the model with its method and the data, set up once (:func:`set_up`) into
the :class:`Run` that the recipe's steps share; its first lines (:func:`open_run`); and how its training saves
checkpoints, with the one it resumes from (:func:`checkpointing`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list, set_seed
from torch import nn
from transformers import PreTrainedTokenizerBase

from peftbench.config import ExperimentConfig, dump_config
from peftbench.data.cache import PreparedData
from peftbench.errors import PeftbenchError
from peftbench.io import atomic_write_text
from peftbench.methods import MethodSpec, get_method
from peftbench.models import base_parameters, count_parameters
from peftbench.recipe.output import say
from peftbench.recipe.rundir import check_base, config_hash, record_base
from peftbench.recipe.runfiles import CONFIG_FILE
from peftbench.recipe.scoring import versions
from peftbench.recipe.setup import (
    BASE_SHA_ATTR,
    budget_record,
    build_model,
    check_master_weights,
    check_shardable,
    enable_gradient_checkpointing,
    prepare_data,
)
from peftbench.recipe.trackers import flat_config, trackers
from peftbench.training.checkpoint import QUARANTINE, Checkpoint, latest_valid_checkpoint
from peftbench.training.fsdp import Sharding
from peftbench.training.trainer import Checkpointing

log = logging.getLogger("peftbench")


DEEPSPEED_UNTESTED = (
    "warning: DeepSpeed is untested by peftbench (accelerate runs it on GPUs only): checkpoints save rank 0's "
    "optimizer partition only, so a pre-empted ZeRO-2/3 run does not resume exactly, and under ZeRO-3 the saved "
    "weights are not gathered; configs/accelerate/fsdp.yaml is the tested sharded launcher (docs/experiments.md)"
)
"""Said once, by the main process, when a run starts under DeepSpeed."""


@dataclass(frozen=True)
class Run:
    """One run, set up (:func:`set_up`): what the recipe's steps share."""

    cfg: ExperimentConfig
    run_dir: Path
    accelerator: Accelerator
    sharding: Sharding | None
    """FSDP (accelerate launch with an FSDP config): peftbench shards, not accelerate; None: unsharded."""
    spec: MethodSpec
    model: nn.Module
    """As built: the base model with the method applied, untrained."""
    tokenizer: PreTrainedTokenizerBase
    data: PreparedData
    params: tuple[int, int]
    """(trainable, total) parameters of the model as built."""
    base_params: int
    """The base model's parameters alone (the denominator of the trainable share)."""
    progress: bool
    quiet: bool
    """No console lines: asked for, or any rank but the main process (one console, not one per rank)."""


def set_up(cfg: ExperimentConfig, run_dir: Path, *, progress: bool, quiet: bool) -> Run:
    """The run's processes, the model with its method and the data; bad data fails here, before the run directory
    exists. Then the run directory with its config and (main process) the base weights' record; a resumed run
    must continue on the base weights it started on."""
    accelerator, sharding, quiet = _processes(cfg, run_dir, quiet)
    set_seed(cfg.seed)
    spec = get_method(cfg.method_name)
    model, tokenizer = build_model(cfg, hash_base=True)
    check_base(run_dir, getattr(model, BASE_SHA_ATTR))  # a resumed run continues on the weights it started on
    if cfg.train.gradient_checkpointing:  # training only: checkpointed blocks run as before in eval mode
        enable_gradient_checkpointing(model)
    data = prepare_data(cfg, tokenizer, model, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, dump_config(cfg))
    if accelerator.is_main_process:
        record_base(run_dir, cfg, getattr(model, BASE_SHA_ATTR))
    return Run(
        cfg=cfg,
        run_dir=run_dir,
        accelerator=accelerator,
        sharding=sharding,
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        data=data,
        params=count_parameters(model),
        base_params=base_parameters(model),
        progress=progress,
        quiet=quiet,
    )


def _processes(cfg: ExperimentConfig, run_dir: Path, quiet: bool) -> tuple[Accelerator, Sharding | None, bool]:
    """The accelerator (processes, mixed precision, gradient accumulation, trackers), the FSDP sharding when it
    applies, and whether this process stays quiet; refuses what cannot train under this launch."""
    sharding = Sharding.from_env()  # FSDP (accelerate launch with an FSDP config): peftbench shards, not accelerate
    if cfg.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        # accelerate would train in fp32 without a word, and the run would record fp16
        raise PeftbenchError("train.mixed_precision=fp16 needs a GPU (the CPU would train in fp32); use bf16 or no")
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        log_with=trackers(cfg, run_dir),
        project_dir=run_dir,
        # without a GPU, accelerate needs cpu=True to join a torchrun / accelerate launch process group (gloo)
        cpu=not torch.cuda.is_available(),
    )
    quiet = quiet or not accelerator.is_main_process  # one console, not one per rank
    if sharding is not None and accelerator.num_processes == 1:
        say("FSDP asked for with one process: training unsharded", quiet)
        sharding = None
    if sharding is not None:
        check_shardable(cfg)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    if deepspeed:
        say(DEEPSPEED_UNTESTED, quiet)
    check_master_weights(cfg, deepspeed=deepspeed)
    return accelerator, sharding, quiet


def open_run(run: Run) -> None:
    """Starts the experiment trackers (``train.report_to``) and writes the run's first lines: what trains, how many
    parameters (and the budget they match), the data."""
    cfg, data, quiet = run.cfg, run.data, run.quiet
    if cfg.train.report_to:  # TensorBoard: <run_dir>/tensorboard/; W&B and MLflow: see recipe/trackers.py
        run.accelerator.init_trackers("tensorboard")
        values = flat_config(cfg.to_dict())
        for tracker in run.accelerator.trackers:  # the config as each tracker keeps hyperparameters
            if tracker.name == "tensorboard":  # in the run's own directory: accelerate's adds two timestamped runs
                tracker.writer.add_hparams(values, metric_dict={}, run_name=".")
            else:
                tracker.store_init_configuration(values)
    trainable, base = run.params[0], run.base_params
    share = f"{100 * trainable / base:.4f}% of the base model's {base:,}"
    say(f"run {run.run_dir} | method {run.spec.name} | trainable {trainable:,} ({share})", quiet)
    matched = budget_record(cfg, trainable)
    if matched:
        say(
            f"budget {matched['budget']} = {matched['target']:,} parameters -> {matched['knob']}="
            f"{matched['value']} ({matched['achieved']:,} trainable)",
            quiet,
        )
    log.info("data: %s", data.stats)
    if data.cache_path is not None:
        log.info("data: tokenised examples %s %s", "read from" if data.from_cache else "cached in", data.cache_path)


def checkpointing(run: Run) -> Checkpointing:
    """How the run's training saves checkpoints (``train.save_steps``, ``train.save_total_limit``) and the one it
    resumes from (:func:`resume_point`)."""
    cfg = run.cfg
    resume = resume_point(run)
    return Checkpointing(
        run.run_dir, cfg.train.save_steps, cfg.train.save_total_limit, config_hash(cfg), versions(), resume
    )


def resume_point(run: Run) -> Checkpoint | None:
    """The newest valid checkpoint to resume training from, or None to train from the start. The main process
    checks (and quarantines damaged checkpoints); the others take its choice, or its refusal."""
    accelerator = run.accelerator
    resume, refusal = None, None
    if accelerator.is_main_process:
        try:
            num, sharded = accelerator.num_processes, run.sharding is not None
            resume = latest_valid_checkpoint(run.run_dir, config_hash(run.cfg), num, sharded)
        except (PeftbenchError, OSError) as exc:  # every rank must hear it, or the others wait forever
            refusal = str(exc)
    if accelerator.num_processes > 1:
        resume, refusal = broadcast_object_list([(resume, refusal)])[0]
    if refusal is not None:
        raise PeftbenchError(refusal)
    if resume is not None:
        say(f"resuming from {resume.path.name} (step {resume.step})", run.quiet)
    elif (run.run_dir / QUARANTINE).is_dir():
        say("no valid checkpoint left (see quarantine/); training from the start", run.quiet)
    return resume
