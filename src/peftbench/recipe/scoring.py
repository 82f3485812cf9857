"""Scoring a run: ROUGE-L on the validation tasks while it trains, and on the test split its
``predictions.jsonl`` and ``metrics.json`` (scores, parameter counts, budget, times, memory, config hash and the
software's versions).
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from peftbench.config import ExperimentConfig
from peftbench.data.tokenize import Features
from peftbench.evaluation.generate import generate_predictions
from peftbench.evaluation.metrics import score_predictions
from peftbench.evaluation.ranks import process_group
from peftbench.io import atomic_write_json
from peftbench.memory.measure import PeakMemory, PeakTracker, tensor_roots
from peftbench.methods import MethodSpec
from peftbench.models import is_encoder_decoder
from peftbench.recipe.instance_scores import record_instance_scores
from peftbench.recipe.protocol import study_protocol
from peftbench.recipe.rundir import config_hash
from peftbench.recipe.runfiles import METRICS_FILE, PREDICTIONS_FILE
from peftbench.recipe.setup import budget_record
from peftbench.training.preemption import StopFlag
from peftbench.training.state import TrainResult
from peftbench.version import __version__


def validation_scorer(
    cfg: ExperimentConfig,
    tokenizer: PreTrainedTokenizerBase,
    features: list[Features],
    device: torch.device,
    *,
    shard: bool = True,
) -> Callable[[nn.Module], float] | None:
    """ROUGE-L on the validation tasks (the study's model-selection metric), or None without validation tasks.
    Under several ranks every rank calls it; they generate a share each and all get the same score. With
    ``shard=False`` (an FSDP-sharded model, whose every forward pass needs every rank) each rank generates every
    batch, in step with the others."""
    if not features or cfg.train.eval_steps <= 0:
        return None

    def score(trained: nn.Module) -> float:
        decoding = _decoding(cfg, trained, device)
        records = generate_predictions(trained, tokenizer, features, None, **decoding, progress=False, shard=shard)
        return float(score_predictions(records)["overall"]["rougeL"])

    return score


def evaluate_and_write(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: list[Features],
    cfg: ExperimentConfig,
    run_dir: Path,
    device: torch.device,
    *,
    spec: MethodSpec | None,
    progress: bool,
    train: TrainResult | None,
    params: tuple[int, int],
    base_params: int | None = None,
    data_stats: dict[str, Any],
    resume: bool = False,
    stop: StopFlag | None = None,
    weights: dict[str, Any] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Generates on the test split, scores, and writes ``predictions.jsonl`` and ``metrics.json``.

    ``params`` is (trainable, total) of the model as built (the base and the method's parameters); ``base_params``
    the base model's alone (default: total), the denominator of ``trainable_percent``. With ``resume``, predictions
    already written are kept; otherwise the evaluation starts afresh. Under a process group of several ranks every
    rank calls this and generates its share of the batches; rank 0 writes the files and returns the metrics, the
    others return ``{}``. ``on_batch`` is :func:`~peftbench.evaluation.generate.generate_predictions`'s.
    """
    predictions_path = run_dir / PREDICTIONS_FILE
    rank, _ = process_group()
    if not resume and rank == 0:
        predictions_path.unlink(missing_ok=True)
    start = time.perf_counter()
    decoding = _decoding(cfg, model, device)
    with _first_batch_memory(model, device, on_batch) as (watched, eval_memory):
        records = generate_predictions(
            model, tokenizer, features, predictions_path, **decoding, progress=progress, stop=stop, on_batch=watched
        )
    eval_time = time.perf_counter() - start
    if rank != 0:  # the other ranks of a sharded evaluation generated their share; rank 0 writes
        return {}
    scores = score_predictions(records, xlingual=cfg.eval.xlingual, xlingual_tokenizer=cfg.eval.xlingual_tokenizer)
    metrics = {
        **scores,
        "status": "finished",
        "run_name": run_dir.name,
        **_method_record(cfg, spec, params, base_params),
        "train": asdict(train) if train is not None else None,
        "weights": weights,
        "train_time_s": train.train_time_s if train is not None else 0.0,
        "eval_time_s": round(eval_time, 3),
        **_memory_fields(train, eval_memory[0] if eval_memory else None),
        "data": data_stats,
        "seed": cfg.seed,
        "protocol": study_protocol(cfg, train.processes if train is not None else None) if spec is not None else None,
        "config_hash": config_hash(cfg),
        "versions": versions(),
    }
    record_instance_scores(run_dir, metrics)  # for the report's intervals and paired tests
    atomic_write_json(run_dir / METRICS_FILE, metrics)
    return metrics


def _memory_fields(train: TrainResult | None, evaluated: PeakMemory | None) -> dict[str, Any]:
    """This run's own peak tensor memory in MB, what it counts named by ``peak_memory_kind`` (memory.measure):
    training's when there was training (a re-evaluation keeps it), else this evaluation's; and evaluation's."""
    peak, peak_kind = (train.peak_memory_mb, train.peak_memory_kind) if train else _mb_and_kind(evaluated)
    eval_peak, eval_kind = _mb_and_kind(evaluated)
    return {
        "peak_memory_mb": peak,
        "peak_memory_kind": peak_kind,
        "peak_memory_of": "training" if train is not None else "evaluation",
        "eval_peak_memory_mb": eval_peak,
        "eval_peak_memory_kind": eval_kind,
    }


@contextlib.contextmanager
def _first_batch_memory(
    model: nn.Module, device: torch.device, on_batch: Callable[[int, int], None] | None
) -> Iterator[tuple[Callable[[int, int], None], list[PeakMemory]]]:
    """Measures the evaluation's peak tensor memory (:mod:`peftbench.memory.measure`): yields the ``on_batch`` to
    generate with and a list that holds the result once the block ends. On CUDA the allocator's peak over the
    whole evaluation; on CPU the tracker watches the first batch only (generation runs many small operators, each of
    which the tracker slows): batches are sorted by length, longest first, and later ones keep within the first's
    token budget, so the first is the largest."""
    tracker = PeakTracker(device, tensor_roots(model)).start()
    result: list[PeakMemory] = []
    with contextlib.ExitStack() as window:
        window.enter_context(tracker.window())

        def watched(done: int, total: int) -> None:
            window.close()  # after the first batch; closing again does nothing
            if on_batch is not None:
                on_batch(done, total)

        try:
            yield watched, result
        finally:
            window.close()
            result.append(tracker.close())


def _mb_and_kind(memory: PeakMemory | None) -> tuple[float | None, str]:
    return (memory.peak_mb, memory.kind) if memory is not None else (None, "")


def _decoding(cfg: ExperimentConfig, model: nn.Module, device: torch.device) -> dict[str, Any]:
    """How a run generates with ``model`` on ``device`` (the config's ``eval`` section), on the validation tasks and
    on the test split alike: :func:`~peftbench.evaluation.generate.generate_predictions`'s options."""
    return {
        "batch_size": cfg.eval.batch_size,
        "max_new_tokens": cfg.eval.max_new_tokens or cfg.data.max_target_length,
        "num_beams": cfg.eval.num_beams,
        "encoder_decoder": is_encoder_decoder(model),
        "device": device,
        "batch_by_tokens": cfg.eval.batch_by_tokens,
        "share_prefix": cfg.eval.share_prefix,
    }


def _method_record(
    cfg: ExperimentConfig, spec: MethodSpec | None, params: tuple[int, int], base_params: int | None
) -> dict[str, Any]:
    """What ``metrics.json`` records of the method (none: the untrained base model) and the parameters: the
    model's (trainable, total) as built, the base model's alone (default: total), the trainable share of the base
    and the budget the counts match."""
    trainable, total = params
    base = base_params if base_params is not None else total
    return {
        "method": cfg.method_name if spec is not None else "untrained",
        "method_config": {k: v for k, v in cfg.method.items() if k != "name"} if spec is not None else {},
        "model": cfg.model.name,
        "trainable_params": trainable,
        "total_params": total,
        "base_params": base,
        "trainable_percent": round(100 * trainable / base, 6) if base else 0.0,  # of the base model
        "trainable_params_note": spec.count_note if spec is not None else "",
        "budget": budget_record(cfg, trainable) if spec is not None else None,
    }


def versions() -> dict[str, str]:
    """Versions of the software that produced a result."""
    import accelerate
    import peft
    import transformers

    return {
        "peftbench": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "python": platform.python_version(),
    }
