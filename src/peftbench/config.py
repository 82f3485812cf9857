"""The experiment schema: typed dataclasses that YAML files and ``key=value`` overrides map onto.

A config is loaded from YAML, overridden with dotted ``section.field=value`` pairs, checked once
(every problem reported in one line), and written back fully resolved as the run's ``config.yaml``.
Reading YAML into it and resolving the method are :mod:`peftbench.configure`'s; the config hash and the run's
name and directory are :mod:`peftbench.recipe.rundir`'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from peftbench.errors import PeftbenchError


@dataclass
class ModelConfig:
    """Which base model to fine-tune."""

    name: str = "tiny-t5"
    """Hub name or local path (real use), or a built-in tiny random preset: tiny-t5, tiny-llama, tiny-gpt2."""
    tokenizer: str | None = None
    """Tokenizer name or path; None = the model's own (presets use a file-free byte-level tokenizer)."""
    init_seed: int = 0
    """Seed of the random initialisation of a tiny preset (ignored for pretrained models)."""
    dtype: str = "float32"
    """Dtype the base weights are loaded in: float32, bfloat16 or float16."""


@dataclass
class DataConfig:
    """SuperNI data: where it is, which tasks and instances, and how prompts are encoded."""

    data_dir: str = "data/superni"
    """Directory in the natural-instructions layout (tasks/*.json, splits/<split>/*.txt)."""
    split: str = "default"
    """Name of the split directory under splits/."""
    max_train_instances_per_task: int | None = 100
    """At most this many training instances per task (a sample seeded by data.seed); None = all."""
    max_eval_instances_per_task: int | None = 100
    """At most this many evaluation instances per task, taken from the first 100 (the official set)."""
    num_validation_tasks: int = 0
    """Training tasks carved out (seeded by data.seed) for validation; the study's default_train_707_val_50 uses
    50 (its own 50 were never published, so the carve-out is ours, not theirs)."""
    num_train_tasks: int | None = None
    """Train on only this many training tasks (nested subsets seeded by data.seed; the study sweeps 8 … 707);
    None = all."""
    english_only: bool = True
    """Keep only tasks whose input, output and instruction languages are all English."""
    seed: int = 42
    """Seed of everything that selects data: the validation tasks, the training-task subsets, the training
    instances of each task. Kept apart from the top-level ``seed`` (initialisation, data order, dropout,
    each epoch's training target) so that runs over several seeds train and are scored on the same tasks
    and instances (the study fixes data selection at 42 and varies only the training seed)."""
    max_source_length: int = 1024
    """Prompt length limit in tokens; truncation never removes the final 'Output:' cue."""
    max_target_length: int = 128
    """Target length limit in tokens (also the default generation length)."""
    add_task_definition: bool = True
    """Tk-Instruct encoding: include the task definition."""
    num_pos_examples: int = 0
    """Tk-Instruct encoding: number of positive demonstrations (the study: 0; Tk-Instruct's best: 2)."""
    num_neg_examples: int = 0
    """Tk-Instruct encoding: number of negative demonstrations."""
    add_explanation: bool = False
    """Tk-Instruct encoding: include the demonstrations' explanations."""
    add_task_name: bool = False
    """Tk-Instruct encoding: prefix the prompt with the task name."""
    cache: bool = True
    """Keep the tokenised examples in $PEFTBENCH_CACHE/features (default ~/.cache/peftbench/features) and
    reuse them while data files, selection, encoding, tokenizer and lengths are unchanged. Not part of the
    config hash."""


@dataclass
class TrainConfig:
    """Optimisation. Unset (None) fields take the method's defaults."""

    learning_rate: float | None = None
    """Peak learning rate; None = the method's default (see `peftbench methods`)."""
    lr_scheduler: str | None = None
    """transformers scheduler name (linear, constant, cosine, ...); None = method default."""
    warmup_ratio: float | None = None
    """Warm-up fraction of the optimizer steps; None = method default (PEFT 0.03, full 0)."""
    num_epochs: float = 4.0
    """Training epochs (the study: 4); ignored when max_steps is set."""
    max_steps: int | None = None
    """Optimizer steps to train for; overrides num_epochs."""
    per_device_batch_size: int = 8
    """Examples per device per forward pass."""
    gradient_accumulation_steps: int = 1
    """Forward passes per optimizer step."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    mixed_precision: str = "no"
    """accelerate mixed precision: no, fp16 (GPU only: refused on the CPU, where accelerate would ignore it) or bf16."""
    group_by_length: bool = True
    """Batch examples of similar length together (seeded), to waste little compute on padding."""
    logging_steps: int = 10
    """Log the training loss every this many optimizer steps."""
    save_steps: int = 1000
    """Save a checkpoint every this many optimizer steps (the study: 1000); 0 = only on a suspension signal."""
    save_total_limit: int = 2
    """Newest valid checkpoints kept in the run directory."""
    eval_steps: int = 5000
    """Score the validation tasks (ROUGE-L) every this many steps and keep the best weights in best/
    (the study: 5000); needs data.num_validation_tasks > 0; 0 disables."""
    gradient_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward pass instead of keeping them (transformers'
    activation checkpointing, non-reentrant): less memory for about one more forward per step, the same losses and
    gradients. Training only; evaluation and generation are unaffected. Works with every method, DDP and FSDP. Not
    part of the config hash (the same results)."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers for losses, learning rate, validation and test scores and the resolved config:
    tensorboard, wandb, mlflow (as in transformers' TrainingArguments; see recipe/trackers.py). Not part of the
    config hash."""


@dataclass
class EvalConfig:
    """Generation and scoring on the test split."""

    batch_size: int = 32
    """Examples per generation batch for the longest prompts (batches are formed from length-sorted examples)."""
    batch_by_tokens: bool = True
    """Let batches of shorter prompts hold more examples, within the token budget of the first (longest)
    batch: batch_size x (longest prompt + max_new_tokens). Off: every batch has batch_size examples."""
    share_prefix: bool = True
    """Decoder-only models, greedy decoding: encode the prompt prefix a task's examples share (definition and
    instance header) once per task and reuse its KV cache; about 2x faster on SuperNI prompts. Skipped for
    methods with virtual tokens (prompt, prefix, p-tuning). Not part of the config hash (same predictions)."""
    max_new_tokens: int | None = None
    """Generation length limit; None = data.max_target_length."""
    num_beams: int = 1
    """Beam width; 1 = greedy decoding (the default of Tk-Instruct and the study)."""
    weights: str = "best"
    """Which trained weights the test split is scored with: 'best' (the highest validation ROUGE-L, as the
    study loads the best checkpoint before testing) or 'last'. Without validation the last weights are used,
    and metrics.json says so."""
    xlingual: bool = False
    """Score with the cross-lingual track (ROUGE-L over GPT-2 tokens)."""
    xlingual_tokenizer: str = "gpt2"
    """Tokenizer name or path for the cross-lingual track."""


@dataclass
class LaunchConfig:
    """How a run is launched; not part of the config hash (where and how it runs, not what it computes)."""

    num_processes: int = 1
    """Processes (one per GPU) per run; above 1, `run` and the sweep launchers start it with `accelerate launch`
    (or torchrun), after checking that this machine has that many GPUs (see ``gpus_per_process``)."""
    accelerate_config: str | None = None
    """accelerate config file (configs/accelerate/*.yaml: DDP, DeepSpeed ZeRO-2/3, FSDP); None = plain DDP."""
    time_limit_min: int = 1440
    """Slurm time limit per job, in minutes; the job is signalled before it and requeues itself."""
    gpus_per_process: int = 1
    """GPUs requested per process on Slurm; 0 for CPU-only jobs and CPU processes under torchrun (gloo)."""


@dataclass
class ExperimentConfig:
    """One experiment: a base model, a method, data, training and evaluation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model."""
    method: dict[str, Any] = field(default_factory=lambda: {"name": "lora"})
    """The PEFT method: ``name`` plus that method's options (see `peftbench methods`)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The SuperNI data."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""
    seed: int = 42
    """Training seed: method initialisation, data order, each epoch's target draw, dropout. Data selection
    has its own seed, data.seed, so a sweep over seed varies training only, on the same data."""
    output_dir: str = "runs"
    """Directory the run directory is created in."""
    run_name: str | None = None
    """Run directory name; None = '<method>-<key hyperparameters>-<config hash>' (see
    ``peftbench.recipe.rundir.resolved_run_name``)."""
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    """How the run is launched (processes, accelerate config, Slurm time limit)."""

    @property
    def method_name(self) -> str:
        """The method's registry name."""
        return str(self.method.get("name", ""))

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-ready dict."""
        return asdict(self)


_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
"""transformers' schedulers that need no extra arguments."""


def data_problems(d: DataConfig) -> list[str]:
    """What is wrong with a data section (types and ranges), one phrase per problem; empty when it is valid.

    The only check of the data settings: :func:`validate` runs it on every config, and code that builds a
    :class:`DataConfig` itself (tests, benches, notebooks) calls :func:`check_data` before loading."""
    problems = []

    def integer(name: str, minimum: int, *, allow_none: bool = False) -> None:
        value = getattr(d, name)
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            allowed = f"an integer >= {minimum}" + (" (or null for all)" if allow_none else "")
            problems.append(f"data.{name} must be {allowed}, got {value!r}")

    integer("max_train_instances_per_task", 1, allow_none=True)
    integer("max_eval_instances_per_task", 1, allow_none=True)
    integer("num_train_tasks", 1, allow_none=True)
    for name in ("num_validation_tasks", "num_pos_examples", "num_neg_examples"):
        integer(name, 0)
    integer("max_source_length", 16)
    integer("max_target_length", 1)
    if isinstance(d.seed, bool) or not isinstance(d.seed, int) or not 0 <= d.seed < 2**32:
        problems.append(f"data.seed must be in [0, 2**32), got {d.seed!r}")
    if not isinstance(d.split, str) or not d.split.strip() or "/" in d.split:
        problems.append(f"data.split must be a directory name, got {d.split!r}")
    for name in ("english_only", "add_task_definition", "add_explanation", "add_task_name", "cache"):
        if not isinstance(getattr(d, name), bool):
            problems.append(f"data.{name} must be true or false, got {getattr(d, name)!r}")
    return problems


def check_data(d: DataConfig) -> DataConfig:
    """``d`` when it is valid; otherwise a one-line :class:`PeftbenchError` naming every problem."""
    problems = data_problems(d)
    if problems:
        raise PeftbenchError("invalid data config: " + "; ".join(problems))
    return d


def validate(cfg: ExperimentConfig) -> None:
    """Checks value ranges; collects every problem and raises once."""
    problems = []
    t, d, e = cfg.train, cfg.data, cfg.eval
    if t.learning_rate is not None and t.learning_rate <= 0:
        problems.append("train.learning_rate must be > 0")
    if t.warmup_ratio is not None and not 0 <= t.warmup_ratio < 1:
        problems.append("train.warmup_ratio must be in [0, 1)")
    if t.max_steps is not None and t.max_steps < 0:
        problems.append("train.max_steps must be >= 0")
    if t.num_epochs <= 0 and t.max_steps is None:
        problems.append("train.num_epochs must be > 0")
    if t.per_device_batch_size < 1:
        problems.append("train.per_device_batch_size must be >= 1")
    if t.gradient_accumulation_steps < 1:
        problems.append("train.gradient_accumulation_steps must be >= 1")
    if t.eval_steps < 0:
        problems.append("train.eval_steps must be >= 0")
    if t.save_steps < 0 or t.save_total_limit < 1:
        problems.append("train.save_steps must be >= 0 and train.save_total_limit >= 1")
    if t.logging_steps < 1:
        problems.append("train.logging_steps must be >= 1")
    if t.lr_scheduler is not None and t.lr_scheduler not in _SCHEDULERS:
        problems.append(f"train.lr_scheduler must be one of {', '.join(_SCHEDULERS)}")
    if not 0 <= cfg.seed < 2**32:
        problems.append("seed must be in [0, 2**32)")
    if cfg.model.init_seed < 0:
        problems.append("model.init_seed must be >= 0")
    if e.max_new_tokens is not None and e.max_new_tokens < 1:
        problems.append("eval.max_new_tokens must be >= 1")
    if t.weight_decay < 0 or t.max_grad_norm < 0:
        problems.append("train.weight_decay and train.max_grad_norm must be >= 0")
    if t.mixed_precision not in ("no", "fp16", "bf16"):
        problems.append("train.mixed_precision must be no, fp16 or bf16")
    if cfg.model.dtype not in ("float32", "bfloat16", "float16"):
        problems.append("model.dtype must be float32, bfloat16 or float16")
    problems += data_problems(d)
    if e.batch_size < 1:
        problems.append("eval.batch_size must be >= 1")
    if e.num_beams < 1:
        problems.append("eval.num_beams must be >= 1")
    if e.weights not in ("best", "last"):
        problems.append("eval.weights must be best or last")
    if cfg.run_name is not None and ("/" in cfg.run_name or cfg.run_name in ("", ".", "..")):
        problems.append("run_name must be a plain directory name")
    unknown_trackers = sorted(set(t.report_to) - {"tensorboard", "wandb", "mlflow"})
    if unknown_trackers:
        problems.append(
            f"train.report_to: unknown tracker(s) {', '.join(unknown_trackers)}; use tensorboard, wandb, mlflow"
        )
    launch = cfg.launch
    if launch.num_processes < 1 or launch.time_limit_min < 1 or launch.gpus_per_process < 0:
        problems.append("launch.num_processes and launch.time_limit_min must be >= 1, gpus_per_process >= 0")
    if problems:
        raise PeftbenchError("invalid config: " + "; ".join(problems))


def dump_config(cfg: ExperimentConfig) -> str:
    """The config as YAML text (fully resolved)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
