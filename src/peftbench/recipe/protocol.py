"""The study's training protocol, and how far a run's configuration follows it.

The study (He 2024, arXiv 2411.16775; code: hepengfe/parameter_efficient_instruction_tuning) trains T5-3B
LM-adapted in fp32 (``scripts/hfai/hp_run.sh`` launches ``configs/hfai/default_config_ddp.yaml`` with
``mixed_precision: 'no'``; ``from_pretrained`` without a dtype), 4 epochs, per-device batch 1 x accumulation 2
on 8 GPUs, definition-only prompts of at most 1024 tokens, targets of 128, 100 instances per task. Its PEFT grids
(``scripts/grid_search_{1,2,3}/grid_search_<method>_N.sh``) export ``WEIGHT_DECAY=0.01`` (AdamW over every
trainable parameter, ``peft_trainer.py::load_optimizer_n_scheduler``) and ``DROPOUT_RATE=0.1`` (the dropout of
both LoRA implementations and of AdapterHub's IA3, ``peft_trainer.py``), a linear schedule with 3% warm-up; its
full fine-tuning grids use 0 and 0 and a constant learning rate without warm-up.

:func:`study_protocol` compares a configuration with that protocol; every run records the result in
``metrics.json["protocol"]``, so a number says whether it was produced under the study's settings and, where not,
which settings differ.
"""

from __future__ import annotations

from typing import Any

from peftbench.config import ExperimentConfig
from peftbench.configure import method_config

REFERENCE = "He 2024, arXiv 2411.16775 (hepengfe/parameter_efficient_instruction_tuning: hp_run.sh, grid_search_*)"

STUDY_DROPOUT = 0.1
"""``DROPOUT_RATE`` of the study's PEFT grids, given to the dropout on LoRA's (and IA3's) input."""
STUDY_WEIGHT_DECAY = 0.01
"""``WEIGHT_DECAY`` of the study's PEFT grids (AdamW); full fine-tuning uses 0."""
DROPOUT_METHODS = ("lora", "dora", "adalora", "vera")
"""Methods whose ``dropout`` is a dropout on the update's input, as the study's LoRA's (LoHa's and LoKr's
``dropout`` is peft's rank dropout, another regulariser, left at 0)."""
STUDY_EFFECTIVE_BATCH = 16
"""Per-device batch 1 x gradient accumulation 2 x 8 GPUs."""


def _method_option(cfg: ExperimentConfig, key: str) -> Any:
    return getattr(method_config(cfg), key, None)


def study_settings(cfg: ExperimentConfig, processes: int | None = None) -> dict[str, tuple[Any, Any]]:
    """``{setting: (this run's value, the study's value)}`` for every setting of the study's protocol that
    applies to ``cfg``'s method. ``processes``: the data-parallel processes that trained, when known (a finished
    run); else ``launch.num_processes``, the number the config asks for."""
    full = cfg.method_name == "full"
    t, d = cfg.train, cfg.data
    settings: dict[str, tuple[Any, Any]] = {
        "model.dtype": (cfg.model.dtype, "float32"),
        "train.mixed_precision": (t.mixed_precision, "no"),
        "train.weight_decay": (t.weight_decay, 0.0 if full else STUDY_WEIGHT_DECAY),
        "train.lr_scheduler": (t.lr_scheduler, "constant" if full else "linear"),
        "train.warmup_ratio": (t.warmup_ratio, 0.0 if full else 0.03),
        "train.num_epochs": (t.num_epochs if t.max_steps is None else f"max_steps={t.max_steps}", 4),
        "effective batch": (
            t.per_device_batch_size * t.gradient_accumulation_steps * (processes or cfg.launch.num_processes),
            STUDY_EFFECTIVE_BATCH,
        ),
        "data.split": (d.split, "default"),
        "data.num_pos_examples": (d.num_pos_examples, 0),
        "data.max_source_length": (d.max_source_length, 1024),
        "data.max_target_length": (d.max_target_length, 128),
        "data.max_train_instances_per_task": (d.max_train_instances_per_task, 100),
        "data.max_eval_instances_per_task": (d.max_eval_instances_per_task, 100),
        "eval.weights": (cfg.eval.weights, "best"),
    }
    if not full and cfg.method_name:
        dropout = _method_option(cfg, "dropout")
        if cfg.method_name in DROPOUT_METHODS:
            settings["method.dropout"] = (dropout, STUDY_DROPOUT)
        elif cfg.method_name == "prefix":  # the study's prefix reaches T5's decoder self-attention only
            settings["method.scope"] = (_method_option(cfg, "scope"), "decoder")
        elif cfg.method_name == "ia3":  # the study's IA3 is AdapterHub's, with a dropout; peft's has none
            settings["method.dropout"] = ("none (peft's IA3 has no dropout)", STUDY_DROPOUT)
    return settings


def study_protocol(cfg: ExperimentConfig, processes: int | None = None) -> dict[str, Any]:
    """What ``metrics.json["protocol"]`` records: the reference, whether every setting follows it, and the
    settings that differ (``{setting: {"run": value, "study": value}}``); ``processes`` as for
    :func:`study_settings`."""
    settings = study_settings(cfg, processes)
    differences = {key: {"run": run, "study": study} for key, (run, study) in settings.items() if run != study}
    return {"reference": REFERENCE, "follows_study": not differences, "differences": differences}
