"""One experiment, end to end, into a run directory: :func:`run_experiment`, whose steps read top to bottom.

1. set up: the processes, the model with its method, the data (:mod:`peftbench.recipe.start`);
2. train, resuming from the newest valid checkpoint, or take the weights a finished training saved;
3. choose the weights the test is scored with: best on validation, or last (:mod:`peftbench.recipe.chosen_weights`);
4. test: the whole test split, scored into ``metrics.json`` (:mod:`peftbench.recipe.scoring`).

The run directory's files (their names, state, config, metrics and weights) are :mod:`peftbench.recipe.rundir`'s;
scoring a run again from what is on disk (``peftbench evaluate``) is :mod:`peftbench.recipe.evaluate`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from peftbench.config import ExperimentConfig
from peftbench.models import is_encoder_decoder
from peftbench.recipe.chosen_weights import (
    Trained,
    choose_test_weights,
    finished_training,
    select_test_weights,
    share_weights,
)
from peftbench.recipe.evaluate import evaluate, evaluate_run, evaluate_untrained
from peftbench.recipe.output import RunResult, run_log, say
from peftbench.recipe.rundir import check_same_config, run_dir_for, run_state
from peftbench.recipe.runfiles import CONFIG_FILE, LOG_FILE, finished_metrics, headline
from peftbench.recipe.scoring import evaluate_and_write, validation_scorer
from peftbench.recipe.setup import unsharded
from peftbench.recipe.start import Run, checkpointing, open_run, set_up
from peftbench.training.callbacks import Callback, CallbackList, installed_callbacks
from peftbench.training.preemption import StopFlag, stop_on_signals
from peftbench.training.trainer import Schedule, fit

__all__ = [
    "RunResult",
    "evaluate",
    "evaluate_run",
    "evaluate_untrained",
    "run_experiment",
    "run_log",
    "say",
    "select_test_weights",
]


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
    finished = _already_finished(cfg, run_dir, quiet)
    if finished is not None:
        return finished
    run = set_up(cfg, run_dir, progress=progress, quiet=quiet)  # 1. set up: bad data fails before run_dir exists
    with run_log(run_dir / LOG_FILE), stop_on_signals() as stop, run_state(run_dir) as state:
        callback = CallbackList([*installed_callbacks(), *callbacks])
        open_run(run)
        trained = finished_training(run, state)  # 2. a finished training's weights, when they read back whole
        if trained is None:
            trained = _train(run, stop, callback)  # 2. train, resuming from the newest valid checkpoint
            trained = choose_test_weights(run, trained, state)  # 3. best on validation, or last; saved
        _test(run, trained, stop, callback)  # 4. test
    return RunResult(run_dir, finished_metrics(run_dir) or {})


def _already_finished(cfg: ExperimentConfig, run_dir: Path, quiet: bool) -> RunResult | None:
    """A finished run's result (reported, not redone), or None; either way an existing run directory must hold
    this very config."""
    finished = finished_metrics(run_dir)
    if finished is not None:
        check_same_config(run_dir, cfg)
        say(f"{run_dir}: already finished; nothing to do.", quiet)
        say(headline(run_dir.name, finished), quiet)
        return RunResult(run_dir, finished, skipped=True)
    if (run_dir / CONFIG_FILE).exists():
        check_same_config(run_dir, cfg)
    return None


def _train(run: Run, stop: StopFlag, callback: CallbackList) -> Trained:
    """Trains the run's model, resuming from the newest valid checkpoint, and returns it as ``evaluate`` has it:
    unwrapped, and under FSDP an unsharded copy on every rank with rank 0's gathered weights."""
    cfg, accelerator, sharding = run.cfg, run.accelerator, run.sharding
    saving = checkpointing(run)  # says which checkpoint it resumes from
    result = fit(
        run.model,
        run.data.train,
        cfg.train,
        Schedule.of(cfg.train),
        accelerator,
        seed=cfg.seed,
        pad_id=run.tokenizer.pad_token_id,
        encoder_decoder=is_encoder_decoder(run.model),
        progress=run.progress,
        checkpointing=saving,
        stop=stop,
        validate=validation_scorer(cfg, run.tokenizer, run.data.validation, accelerator.device, shard=sharding is None),
        hooks=run.spec.training_hooks,
        callbacks=callback.callbacks,
        sharding=sharding,
    )
    model = accelerator.unwrap_model(run.model, keep_fp32_wrapper=False)  # evaluate as `evaluate` does
    if sharding is not None:  # every rank evaluates an unsharded copy with rank 0's gathered weights
        model = unsharded(cfg, model, accelerator.device)
    return Trained(model, result)


def _test(run: Run, trained: Trained, stop: StopFlag, callback: CallbackList) -> None:
    """Evaluates the whole test split into ``predictions.jsonl`` and ``metrics.json`` (resumable per batch; every
    rank generates a share, rank 0 writes) and ends the run's trackers."""
    accelerator = run.accelerator
    if accelerator.num_processes > 1:  # the other ranks score rank 0's weights: the best ones, if chosen
        share_weights(trained.model, accelerator)
    metrics = evaluate_and_write(
        trained.model,
        run.tokenizer,
        run.data.test,
        run.cfg,
        run.run_dir,
        accelerator.device,
        spec=run.spec,
        progress=run.progress,
        train=trained.result,
        params=run.params,
        base_params=run.base_params,
        data_stats=run.data.stats,
        resume=True,
        stop=stop,
        weights=trained.weights,
        on_batch=callback.on_evaluation_batch,
    )
    if accelerator.is_main_process:
        say(headline(run.run_dir.name, metrics), run.quiet)
        accelerator.log({f"test/{k}": float(v) for k, v in metrics["overall"].items()}, step=trained.result.steps)
    accelerator.wait_for_everyone()
    accelerator.end_training()
