"""One experiment, end to end: setup → train → save → evaluate → score, into a run directory.

The recipe is :func:`run_experiment`; the model and data come from :mod:`peftbench.recipe.setup`, the
run directory's files (their names, state, config, metrics and weights) are
:mod:`peftbench.recipe.rundir`'s, and scoring (validation during training, the test split's
``metrics.json``) is :mod:`peftbench.recipe.scoring`'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list, set_seed
from torch import nn
from tqdm.auto import tqdm

from peftbench.config import ExperimentConfig, dump_config
from peftbench.data.cache import PreparedData
from peftbench.errors import PeftbenchError
from peftbench.io import atomic_write_text, file_sha256
from peftbench.methods import get_method, trainable_parameters
from peftbench.models import base_parameters, count_parameters, is_encoder_decoder
from peftbench.recipe.rundir import (
    check_base,
    check_same_config,
    check_weights,
    config_hash,
    load_trainable,
    read_run_config,
    record_base,
    run_dir_for,
    run_state,
    save_trainable,
)
from peftbench.recipe.runfiles import (
    CONFIG_FILE,
    LAST_WEIGHTS_FILE,
    LOG_FILE,
    WEIGHTS_FILE,
    RunState,
    finished_metrics,
    headline,
)
from peftbench.recipe.scoring import evaluate_and_write, validation_scorer, versions
from peftbench.recipe.setup import (
    BASE_SHA_ATTR,
    budget_record,
    build_model,
    check_master_weights,
    check_shardable,
    prepare_data,
    unsharded,
)
from peftbench.recipe.trackers import flat_config, trackers
from peftbench.training.callbacks import Callback, CallbackList, installed_callbacks
from peftbench.training.checkpoint import QUARANTINE, latest_valid_checkpoint, load_best
from peftbench.training.fsdp import Sharding
from peftbench.training.preemption import stop_on_signals
from peftbench.training.state import TrainResult
from peftbench.training.trainer import Checkpointing, Schedule, fit
from peftbench.weights import apply_trainable

log = logging.getLogger("peftbench")


DEEPSPEED_UNTESTED = (
    "warning: DeepSpeed is untested by peftbench (accelerate runs it on GPUs only): checkpoints save rank 0's "
    "optimizer partition only, so a pre-empted ZeRO-2/3 run does not resume exactly, and under ZeRO-3 the saved "
    "weights are not gathered; configs/accelerate/fsdp.yaml is the tested sharded launcher (docs/experiments.md)"
)
"""Said once, by the main process, when a run starts under DeepSpeed."""


@dataclass
class RunResult:
    """Where a run lives and what it scored."""

    run_dir: Path
    metrics: dict[str, Any]
    skipped: bool = False
    """True when the run had already finished and nothing was done."""


# --------------------------------------------------------------------------------------------------
# Console and log


def say(message: str, quiet: bool = False) -> None:
    """Logs a message and shows it on the console (above any progress bar)."""
    log.info(message)
    if not quiet:
        tqdm.write(message)


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Sends peftbench's log records to ``path`` for the duration of the block."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        handler.close()


# --------------------------------------------------------------------------------------------------
# Train and evaluate


def run_experiment(
    cfg: ExperimentConfig, *, progress: bool = True, quiet: bool = False, callbacks: Sequence[Callback] = ()
) -> RunResult:
    """Trains and evaluates one configuration, resuming where an earlier attempt stopped.

    A finished run is reported, not redone. A suspension signal (SIGTERM, SIGUSR1, SIGINT) makes the run
    save at the next step boundary (or after the current evaluation batch) and raise ``Preempted``; running
    the same command again continues from the newest valid checkpoint. ``callbacks`` watch the training and
    the test evaluation, after those of installed plugins (:mod:`peftbench.training.callbacks`).
    """
    run_dir = run_dir_for(cfg)
    finished = finished_metrics(run_dir)
    if finished is not None:
        check_same_config(run_dir, cfg)
        say(f"{run_dir}: already finished; nothing to do.", quiet)
        say(headline(run_dir.name, finished), quiet)
        return RunResult(run_dir, finished, skipped=True)
    if (run_dir / CONFIG_FILE).exists():
        check_same_config(run_dir, cfg)

    # 1. setup: processes, model with its method, data (bad data fails here, before a run directory exists)
    sharding = Sharding.from_env()  # FSDP (accelerate launch with an FSDP config): peftbench shards, not accelerate
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
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        say(DEEPSPEED_UNTESTED, quiet)
    check_master_weights(cfg, deepspeed=accelerator.distributed_type == DistributedType.DEEPSPEED)
    set_seed(cfg.seed)
    spec = get_method(cfg.method_name)
    model, tokenizer = build_model(cfg, hash_base=True)
    check_base(run_dir, getattr(model, BASE_SHA_ATTR))  # a resumed run continues on the weights it started on
    data = prepare_data(cfg, tokenizer, model, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, dump_config(cfg))
    if accelerator.is_main_process:
        record_base(run_dir, cfg, getattr(model, BASE_SHA_ATTR))
    with run_log(run_dir / LOG_FILE), stop_on_signals() as stop, run_state(run_dir) as state:
        callback = CallbackList([*installed_callbacks(), *callbacks])
        if cfg.train.report_to:  # TensorBoard: <run_dir>/tensorboard/; W&B and MLflow: see recipe/trackers.py
            accelerator.init_trackers("tensorboard", config=flat_config(cfg.to_dict()))
        trainable, total = count_parameters(model)
        base = base_parameters(model)
        _announce(cfg, run_dir, spec.name, trainable, base, data, quiet)

        # 2. fit, resuming from the newest valid checkpoint (or take the weights a finished training saved)
        if _trained_weights(model, state, run_dir, quiet):
            model.to(accelerator.device)
            result, weights = TrainResult(**state["train"]), state.get("weights")
            say("training had finished; continuing the evaluation", quiet)
        else:
            resume, refusal = None, None
            if accelerator.is_main_process:  # one process checks (and quarantines); the others take its choice
                try:
                    resume = latest_valid_checkpoint(run_dir, config_hash(cfg), accelerator.num_processes,
                                                     sharding is not None)  # fmt: skip
                except (PeftbenchError, OSError) as exc:  # every rank must hear it, or the others wait forever
                    refusal = str(exc)
            if accelerator.num_processes > 1:
                resume, refusal = broadcast_object_list([(resume, refusal)])[0]
            if refusal is not None:
                raise PeftbenchError(refusal)
            if resume is not None:
                say(f"resuming from {resume.path.name} (step {resume.step})", quiet)
            elif (run_dir / QUARANTINE).is_dir():
                say("no valid checkpoint left (see quarantine/); training from the start", quiet)
            checkpointing = Checkpointing(
                run_dir, cfg.train.save_steps, cfg.train.save_total_limit, config_hash(cfg), versions(), resume
            )
            result = fit(
                model, data.train, cfg.train, Schedule.of(cfg.train), accelerator,
                seed=cfg.seed, pad_id=tokenizer.pad_token_id, encoder_decoder=is_encoder_decoder(model),
                progress=progress, checkpointing=checkpointing, stop=stop,
                validate=validation_scorer(cfg, tokenizer, data.validation, accelerator.device,
                                           shard=sharding is None),
                hooks=spec.training_hooks, callbacks=callback.callbacks, sharding=sharding,
            )  # fmt: skip
            model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # evaluate as `evaluate` does
            if sharding is not None:  # every rank evaluates an unsharded copy with rank 0's gathered weights
                model = unsharded(cfg, model, accelerator.device)

            # 3. save: the weights the test is scored with (best on validation, or last), and the state
            weights = None
            if accelerator.is_main_process:
                weights = select_test_weights(model, cfg, result, run_dir)
                say(weights["note"], quiet)
                save_trainable(model, run_dir / WEIGHTS_FILE, cfg)
                state.update(trained=True, train=asdict(result), weights=weights,
                             weights_sha256=file_sha256(run_dir / WEIGHTS_FILE))  # fmt: skip
                state.save()

        # 4. evaluate the whole test split (resumable per batch; every rank generates a share, rank 0 writes)
        if accelerator.num_processes > 1:  # the other ranks score rank 0's weights: the best ones, if chosen
            _share_weights(model, accelerator)
        metrics = evaluate_and_write(
            model, tokenizer, data.test, cfg, run_dir, accelerator.device, spec=spec, progress=progress,
            train=result, params=(trainable, total), base_params=base, data_stats=data.stats, resume=True,
            stop=stop, weights=weights, on_batch=callback.on_evaluation_batch,
        )  # fmt: skip
        if accelerator.is_main_process:
            say(headline(run_dir.name, metrics), quiet)
            accelerator.log({f"test/{k}": float(v) for k, v in metrics["overall"].items()}, step=result.steps)
        accelerator.wait_for_everyone()
        accelerator.end_training()
    return RunResult(run_dir, finished_metrics(run_dir) or {})


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


def _announce(
    cfg: ExperimentConfig, run_dir: Path, method: str, trainable: int, base: int, data: PreparedData, quiet: bool
) -> None:
    """The run's first lines: what trains, how many parameters (and the budget they match), the data."""
    share = f"{100 * trainable / base:.4f}% of the base model's {base:,}"
    say(f"run {run_dir} | method {method} | trainable {trainable:,} ({share})", quiet)
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
        return {**last, "note": "no validation tasks (data.num_validation_tasks or train.eval_steps is 0): "
                f"the test is scored with the last weights (step {result.steps})"}  # fmt: skip
    tensors, score = load_best(run_dir, result.best_step)
    if result.best_step != result.steps:
        save_trainable(model, run_dir / LAST_WEIGHTS_FILE, cfg)
        apply_trainable(model, tensors, str(run_dir / "best"))
    return {
        "used": "best", "step": result.best_step, "validation_rougeL": score, "last_step": result.steps,
        "note": f"test scored with the best validation weights: step {result.best_step} of {result.steps}, "
        f"validation ROUGE-L {score:.2f}",
    }  # fmt: skip


def _share_weights(model: nn.Module, accelerator: Accelerator) -> None:
    """Rank 0's trainable weights on every rank, before a sharded test evaluation: rank 0 alone loads the
    best validation weights (:func:`select_test_weights`)."""
    import torch.distributed as dist

    for param in trainable_parameters(model).values():
        data = param.data.to(accelerator.device)
        dist.broadcast(data, src=0)
        param.data.copy_(data)


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
        model, tokenizer = build_model(cfg, apply_method=not untrained, hash_base=True)
        check_base(run_dir, getattr(model, BASE_SHA_ATTR))  # scores of other base weights would be wrong
        record_base(run_dir, cfg, getattr(model, BASE_SHA_ATTR))
        if not untrained:
            check_weights(run_dir)
            load_trainable(model, run_dir / WEIGHTS_FILE)
        trainable, total = count_parameters(model)
        base = base_parameters(model)
        data = prepare_data(cfg, tokenizer, model, progress)
        device = accelerator.device if accelerator else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        metrics = evaluate_and_write(
            model, tokenizer, data.test, cfg, run_dir, device, spec=None if untrained else get_method(cfg.method_name),
            progress=progress, train=TrainResult(**previous["train"]) if previous.get("train") else None,
            params=(0 if untrained else trainable, total), base_params=base, data_stats=data.stats,
            weights=previous.get("weights"),
            on_batch=CallbackList([*installed_callbacks(), *callbacks]).on_evaluation_batch,
        )  # fmt: skip
        if metrics:
            say(headline(run_dir.name, metrics), quiet)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return RunResult(run_dir, metrics)


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
    return evaluate(read_run_config(run_dir), run_dir, untrained=untrained, previous=previous, progress=progress,
                    quiet=quiet)  # fmt: skip
