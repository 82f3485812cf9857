"""Load Super-NaturalInstructions (SuperNI) task files and splits into encoded examples.

Expected layout (the original ``allenai/natural-instructions`` repository layout)::

    <data_dir>/tasks/<task>.json
    <data_dir>/splits/<split>/train_tasks.txt
    <data_dir>/splits/<split>/test_tasks.txt
    <data_dir>/splits/<split>/excluded_tasks.txt   (optional)

Selection follows Tk-Instruct (``src/ni_dataset.py``): training instances are shuffled and capped per task
(``max_num_instances_per_task``); evaluation tasks use the first 100 instances of each task file (the official
label-balanced evaluation set) and then the first ``max_eval_instances_per_task`` of those (Tk-Instruct
shuffles before capping; we keep file order so a smaller cap is a prefix of the official set). A training
example keeps all its non-empty outputs as ``targets`` and each epoch trains on one of them drawn afresh
(Tk-Instruct's collator: ``random.choice(output)`` per batch; here deterministic in the training seed, the
epoch and the instance, see :func:`peftbench.data.collate.with_epoch_targets`); evaluation examples keep the
first output as target; all outputs are references, exactly as the file has
them (empty strings included, as the official reference file keeps them). Evaluation keeps instances with an
empty input; training skips instances without a non-empty output (an empty target would teach the model to
stop at once); see docs/fidelity.md.

All randomness goes through ``random.Random`` objects seeded from :attr:`SuperNIConfig.seed` (and the task
name, so a task's sample does not depend on which other tasks are listed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.data.encoding import EncodingConfig, encode_sources
from peftbench.errors import PeftbenchError

__all__ = [
    "EVAL_INSTANCES_PER_TASK",
    "REQUIRED_TASK_KEYS",
    "Example",
    "SuperNIConfig",
    "SuperNIData",
    "Task",
    "load_superni",
    "load_task",
]

logger = logging.getLogger(__name__)

EVAL_INSTANCES_PER_TASK = 100
"""SuperNI evaluates on the first 100 instances of each task file (label-balanced, put first on purpose)."""

REQUIRED_TASK_KEYS = (
    "Definition",
    "Categories",
    "Positive Examples",
    "Negative Examples",
    "Input_language",
    "Output_language",
    "Instruction_language",
    "Instances",
)
"""Keys every task file must have."""

_ENGLISH = ["English"]
_SHOW_MISSING = 3


@dataclass(frozen=True)
class Task:
    """One SuperNI task file, validated."""

    name: str
    """Task name: the file name without ``.json`` (e.g. ``task1146_country_capital``)."""
    definition: str
    """The task definition (``Definition[0]`` when the file holds a list, as Tk-Instruct uses)."""
    category: str
    """The task category, ``Categories[0]``."""
    categories: list[str]
    """All categories listed in the file."""
    positive_examples: list[dict[str, Any]] = field(repr=False)
    """Positive demonstrations: dicts with ``input``, ``output`` and usually ``explanation``."""
    negative_examples: list[dict[str, Any]] = field(repr=False)
    """Negative demonstrations, same shape as the positive ones."""
    input_language: list[str]
    """``Input_language`` of the file."""
    output_language: list[str]
    """``Output_language`` of the file."""
    instruction_language: list[str]
    """``Instruction_language`` of the file."""
    instances: list[dict[str, Any]] = field(repr=False)
    """Instances in file order: dicts with ``id`` (str), ``input`` (str) and ``output`` (list of str)."""

    @property
    def is_english(self) -> bool:
        """Whether input, output and instruction languages are all exactly ``["English"]``."""
        return (
            self.input_language == _ENGLISH
            and self.output_language == _ENGLISH
            and self.instruction_language == _ENGLISH
        )


@dataclass(frozen=True)
class Example:
    """One encoded instance, ready for tokenisation."""

    id: str
    """The instance id from the task file (e.g. ``task1146-caea...``)."""
    task: str
    """Name of the task the instance belongs to."""
    category: str
    """Category of that task (``Categories[0]``)."""
    source: str
    """The encoded prompt; ends with ``"Output: "``."""
    target: str
    """The default target: the first non-empty output for training (each epoch draws one of ``targets``, see
    :func:`peftbench.data.collate.with_epoch_targets`), the first output for evaluation."""
    references: tuple[str, ...]
    """All outputs of the instance as in the file, empty strings included (for evaluation metrics; the official
    reference file keeps them too)."""
    targets: tuple[str, ...] = ()
    """Training: the targets an epoch draws from, the instance's non-empty outputs in file order
    (``targets[0] == target``). Empty for evaluation examples."""


@dataclass
class SuperNIConfig:
    """Where the SuperNI data is and which instances to take."""

    data_dir: str
    """Directory holding ``tasks/`` and ``splits/`` (a natural-instructions checkout)."""
    split: str = "default"
    """Name of the directory under ``splits/`` (``default`` is SuperNI's English 756/119 split)."""
    max_train_instances_per_task: int | None = 100
    """Training instances per task after a seeded shuffle; ``None`` takes all."""
    max_eval_instances_per_task: int | None = 100
    """Evaluation instances per task: the first N of the first 100; ``None`` takes those 100."""
    num_validation_tasks: int = 0
    """Training tasks carved out as validation tasks (the study's ``default_train_707_val_50`` uses 50)."""
    english_only: bool = True
    """Keep only tasks whose input, output and instruction languages are all ``["English"]``."""
    num_train_tasks: int | None = None
    """Train on only this many of the training tasks (after validation carving); ``None`` takes all. The
    subset is a prefix of one seeded shuffle, so smaller counts are subsets of larger ones (the study's
    training-task curve: 8 … 707)."""
    seed: int = 42
    """Seed for the validation carving, the training-task subsets and the training-instance shuffle (``data.seed``
    of a run; the training target of each epoch is drawn from the training seed instead)."""


@dataclass
class SuperNIData:
    """The loaded examples and what was selected."""

    train: list[Example]
    """Training examples, task by task in split-file order."""
    validation: list[Example]
    """Validation examples (from the carved-out training tasks), task by task in sorted order."""
    test: list[Example]
    """Test examples, task by task in split-file order."""
    train_tasks: list[str]
    """Training task names (split-file order, validation tasks removed)."""
    validation_tasks: list[str]
    """Validation task names (sorted)."""
    test_tasks: list[str]
    """Test task names (split-file order)."""
    stats: dict[str, int]
    """Counts: ``{train,validation,test}_tasks``, ``{train,validation,test}_instances``,
    ``skipped_instances``, ``excluded_non_english_tasks``, ``excluded_tasks``."""


# --------------------------------------------------------------------------------------------- task files


def _fail(path: Path, problem: str) -> PeftbenchError:
    return PeftbenchError(f"{path}: {problem}")


def _type_name(value: Any) -> str:
    return type(value).__name__


def _string_list(path: Path, key: str, value: Any, *, non_empty: bool) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, f"{key!r} must be a list of strings, got {_type_name(value)}")
    if non_empty and not value:
        raise _fail(path, f"{key!r} must not be empty")
    return list(value)


def _demonstrations(path: Path, key: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _fail(path, f"{key!r} must be a list of examples, got {_type_name(value)}")
    for idx, example in enumerate(value):
        if not isinstance(example, dict):
            raise _fail(path, f"{key!r}[{idx}] must be an object, got {_type_name(example)}")
        for field_name in ("input", "output"):
            if not isinstance(example.get(field_name), str):
                raise _fail(path, f"{key!r}[{idx}] needs a string {field_name!r}")
    return list(value)


def _instances(path: Path, name: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _fail(path, f"'Instances' must be a list, got {_type_name(value)}")
    instances: list[dict[str, Any]] = []
    for idx, instance in enumerate(value):
        if not isinstance(instance, dict):
            raise _fail(path, f"'Instances'[{idx}] must be an object, got {_type_name(instance)}")
        text = instance.get("input")
        if not isinstance(text, str):
            raise _fail(path, f"'Instances'[{idx}] needs a string 'input'")
        outputs = instance.get("output")
        if isinstance(outputs, str):
            outputs = [outputs]
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise _fail(path, f"'Instances'[{idx}] needs 'output' as a list of strings")
        instance_id = instance.get("id", f"{name}-{idx}")
        if not isinstance(instance_id, str):
            raise _fail(path, f"'Instances'[{idx}] has a non-string 'id'")
        instances.append({"id": instance_id, "input": text, "output": list(outputs)})
    return instances


def load_task(path: str | Path) -> Task:
    """Read and validate one SuperNI task file.

    Args:
        path: Path to ``<task>.json``; the task name is the file name without ``.json``.

    Returns:
        The validated task, instances in file order.

    Raises:
        PeftbenchError: The file cannot be read, is not valid JSON (line and column are given), lacks
            required keys or has fields of the wrong type.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise _fail(path, f"not valid UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise _fail(path, f"cannot read task file ({err.strerror or err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise _fail(path, f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(data, dict):
        raise _fail(path, f"a task file must hold a JSON object, got {_type_name(data)}")
    missing = [key for key in REQUIRED_TASK_KEYS if key not in data]
    if missing:
        raise _fail(path, f"missing required key(s): {', '.join(repr(k) for k in missing)}")

    name = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    definition = data["Definition"]
    if isinstance(definition, list):
        if not definition or not isinstance(definition[0], str):
            raise _fail(path, "'Definition' must be a string or a non-empty list of strings")
        definition = definition[0]
    elif not isinstance(definition, str):
        raise _fail(path, f"'Definition' must be a string or a list of strings, got {_type_name(definition)}")
    categories = _string_list(path, "Categories", data["Categories"], non_empty=True)
    return Task(
        name=name,
        definition=definition,
        category=categories[0],
        categories=categories,
        positive_examples=_demonstrations(path, "Positive Examples", data["Positive Examples"]),
        negative_examples=_demonstrations(path, "Negative Examples", data["Negative Examples"]),
        input_language=_string_list(path, "Input_language", data["Input_language"], non_empty=False),
        output_language=_string_list(path, "Output_language", data["Output_language"], non_empty=False),
        instruction_language=_string_list(path, "Instruction_language", data["Instruction_language"], non_empty=False),
        instances=_instances(path, name, data["Instances"]),
    )


# --------------------------------------------------------------------------------------------- split files


def _read_task_list(path: Path) -> list[str]:
    """Task names from a split file: one per line, blank lines and ``#`` comments ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise _fail(path, "not valid UTF-8 text") from None
    except OSError as err:
        raise _fail(path, f"cannot read split file ({err.strerror or err})") from None
    names: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(lines, start=1):
        name = raw.split("#", 1)[0].strip()
        if not name:
            continue
        if name in first_line:
            raise _fail(path, f"task {name} is listed twice (lines {first_line[name]} and {lineno})")
        first_line[name] = lineno
        names.append(name)
    return names


def _available_splits(splits_dir: Path) -> str:
    if not splits_dir.is_dir():
        return f"none ({splits_dir} does not exist)"
    names = sorted(p.name for p in splits_dir.iterdir() if p.is_dir())
    return ", ".join(names) if names else "none"


def _check_int(name: str, value: Any, minimum: int, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if allow_none else "")
        raise PeftbenchError(f"superni config: {name} must be {allowed}, got {value!r}")


def _validate_config(config: SuperNIConfig) -> None:
    _check_int("max_train_instances_per_task", config.max_train_instances_per_task, 1, allow_none=True)
    _check_int("max_eval_instances_per_task", config.max_eval_instances_per_task, 1, allow_none=True)
    _check_int("num_validation_tasks", config.num_validation_tasks, 0, allow_none=False)
    _check_int("num_train_tasks", config.num_train_tasks, 1, allow_none=True)
    _check_int("seed", config.seed, -(2**63), allow_none=False)
    if not isinstance(config.split, str) or not config.split.strip() or "/" in config.split:
        raise PeftbenchError(f"superni config: split must be a directory name, got {config.split!r}")
    if not isinstance(config.english_only, bool):
        raise PeftbenchError(f"superni config: english_only must be true or false, got {config.english_only!r}")


# --------------------------------------------------------------------------------------------- selection


@dataclass
class _Selected:
    """What is kept of one task: its metadata and the instances each role would use."""

    task: Task
    path: Path
    train: list[tuple[dict[str, Any], tuple[str, ...]]]
    train_skipped: list[str]
    eval: list[tuple[dict[str, Any], tuple[str, ...]]]
    eval_skipped: list[str]


def _training_targets(instance: dict[str, Any]) -> tuple[str, ...]:
    """The outputs a training target may be: the non-empty ones, in file order (none: the instance is skipped)."""
    return tuple(o for o in instance["output"] if o.strip())


def _select(task: Task, path: Path, config: SuperNIConfig) -> _Selected:
    """Pick the training and the evaluation instances of a task (whichever role it ends up in).

    Training takes any instance with a non-empty output (an empty input is kept, as Tk-Instruct keeps it);
    its targets are its non-empty outputs. Evaluation keeps what the official reference file keeps
    (``eval/leaderboard/create_reference_file.py``: the first 100 instances, ``references = output`` as is),
    empty inputs and empty strings among the references included; only an instance with no output at all
    is skipped, since no reference means no score (the official scorer's max over references fails on it).
    """
    rng = random.Random(f"{config.seed}:{task.name}")
    usable: list[tuple[dict[str, Any], tuple[str, ...]]] = []
    train_skipped: list[str] = []
    for instance in task.instances:
        targets = _training_targets(instance)
        if targets:
            usable.append((instance, targets))
        else:
            train_skipped.append(instance["id"])
    rng.shuffle(usable)
    train = usable if config.max_train_instances_per_task is None else usable[: config.max_train_instances_per_task]

    evaluation: list[tuple[dict[str, Any], tuple[str, ...]]] = []
    eval_skipped: list[str] = []
    for instance in task.instances[:EVAL_INSTANCES_PER_TASK]:
        if instance["output"]:
            evaluation.append((instance, tuple(instance["output"])))
        else:
            eval_skipped.append(instance["id"])
    if config.max_eval_instances_per_task is not None:
        evaluation = evaluation[: config.max_eval_instances_per_task]
    # Keep only the selected instances in memory: full SuperNI task files can be large.
    slim = dataclasses.replace(task, instances=[])
    return _Selected(slim, path, train, train_skipped, evaluation, eval_skipped)


def _warn_skipped(log: logging.Logger, path: Path, skipped: list[str], why: str) -> None:
    if skipped:
        shown = ", ".join(skipped[:_SHOW_MISSING]) + (", ..." if len(skipped) > _SHOW_MISSING else "")
        log.warning("%s: skipped %d %s (%s)", path, len(skipped), why, shown)


# --------------------------------------------------------------------------------------------- loading


def load_superni(
    config: SuperNIConfig,
    encoding: EncodingConfig,
    lengths_fn: Callable[[list[str]], list[int]] | None = None,
    max_source_length: int | None = None,
    log: logging.Logger | None = None,
) -> SuperNIData:
    """Load a SuperNI split, select instances and encode them as Tk-Instruct prompts.

    Steps: read ``train_tasks.txt`` / ``test_tasks.txt`` of the split, drop tasks listed in
    ``excluded_tasks.txt`` (if present), load every listed task file, drop non-English tasks when
    ``english_only`` (SuperNI's English track: input, output and instruction languages all ``["English"]``;
    the official ``default`` split only lists such tasks, Tk-Instruct itself does not filter), carve
    ``num_validation_tasks`` validation tasks out of the training tasks (``random.Random(seed).sample`` of the
    sorted training names, so independent of file order), then select and encode instances.

    Args:
        config: Data location and selection settings.
        encoding: Which task elements go into each prompt.
        lengths_fn: Optional ``Callable[[list[str]], list[int]]`` giving texts' lengths in model tokens (one
            batched tokenizer call per demonstration and task); with ``max_source_length`` it drops
            demonstration examples that do not fit (see :func:`peftbench.data.encoding.encode_source`).
        max_source_length: Token budget of a source, used only with ``lengths_fn``.
        log: Logger for warnings (skipped instances) and the summary; defaults to this module's logger.

    Returns:
        The examples of each role, the task lists and counts. Same config, same result (same order).

    Raises:
        PeftbenchError: A missing directory or split file, a task named in a split without its file, a
            malformed task file, a task in both train and test lists, too many validation tasks, or a role
            left without examples. The message is one line naming the offending file.
    """
    log = log if log is not None else logger
    _validate_config(config)

    data_dir = Path(config.data_dir)
    if not data_dir.is_dir():
        raise PeftbenchError(f"{data_dir}: SuperNI data directory does not exist")
    splits_dir = data_dir / "splits"
    split_dir = splits_dir / config.split
    if not split_dir.is_dir():
        available = _available_splits(splits_dir)
        raise _fail(split_dir, f"split {config.split!r} not found; available splits: {available}")
    train_file = split_dir / "train_tasks.txt"
    test_file = split_dir / "test_tasks.txt"
    for split_file in (train_file, test_file):
        if not split_file.is_file():
            raise _fail(
                split_file,
                f"split file missing (split {config.split!r} needs train_tasks.txt and test_tasks.txt); "
                f"available splits: {_available_splits(splits_dir)}",
            )
    tasks_dir = data_dir / "tasks"
    if not tasks_dir.is_dir():
        raise _fail(tasks_dir, "task directory missing (expected tasks/<task>.json beside splits/)")

    train_names = _read_task_list(train_file)
    test_names = _read_task_list(test_file)
    excluded_file = split_dir / "excluded_tasks.txt"
    excluded_count = 0
    if excluded_file.is_file():
        excluded = set(_read_task_list(excluded_file))
        before = len(train_names) + len(test_names)
        train_names = [n for n in train_names if n not in excluded]
        test_names = [n for n in test_names if n not in excluded]
        excluded_count = before - len(train_names) - len(test_names)

    overlap = sorted(set(train_names) & set(test_names))
    if overlap:
        raise _fail(
            test_file,
            f"{len(overlap)} task(s) also listed in {train_file.name}: {', '.join(overlap[:_SHOW_MISSING])}",
        )
    for split_file, names in ((train_file, train_names), (test_file, test_names)):
        missing = [n for n in names if not (tasks_dir / f"{n}.json").is_file()]
        if missing:
            more = f" and {len(missing) - _SHOW_MISSING} more" if len(missing) > _SHOW_MISSING else ""
            raise _fail(
                split_file,
                f"{len(missing)} of {len(names)} listed task(s) have no file in {tasks_dir}: "
                f"{', '.join(missing[:_SHOW_MISSING])}{more}; hint: use a full SuperNI checkout "
                f"(github.com/allenai/natural-instructions) or list them in {excluded_file}",
            )

    selected: dict[str, _Selected] = {}
    non_english = 0
    kept: dict[str, list[str]] = {"train": [], "test": []}
    for role, names in (("train", train_names), ("test", test_names)):
        for name in names:
            path = tasks_dir / f"{name}.json"
            task = load_task(path)
            if config.english_only and not task.is_english:
                non_english += 1
                log.info("%s: excluded, not an English task", path)
                continue
            selected[name] = _select(task, path, config)
            kept[role].append(name)

    train_names, test_names = kept["train"], kept["test"]
    if not train_names:
        raise _fail(train_file, "no training tasks left after exclusions and the English-only filter")
    if not test_names:
        raise _fail(test_file, "no test tasks left after exclusions and the English-only filter")
    if config.num_validation_tasks >= len(train_names):
        raise _fail(
            train_file,
            f"num_validation_tasks={config.num_validation_tasks} leaves no training tasks "
            f"(only {len(train_names)} available)",
        )
    validation_names = sorted(random.Random(config.seed).sample(sorted(train_names), config.num_validation_tasks))
    validation_set = set(validation_names)
    train_names = [n for n in train_names if n not in validation_set]
    if config.num_train_tasks is not None:
        if config.num_train_tasks > len(train_names):
            raise _fail(
                train_file,
                f"num_train_tasks={config.num_train_tasks} but only {len(train_names)} training tasks are available",
            )
        order = sorted(train_names)
        random.Random(f"train-tasks-{config.seed}").shuffle(order)
        keep = set(order[: config.num_train_tasks])
        train_names = [n for n in train_names if n in keep]

    skipped = 0

    def encode(task: Task, instances: list[dict[str, Any]]) -> list[str]:
        inputs = [inst["input"] for inst in instances]
        return encode_sources(task, inputs, encoding, lengths_fn=lengths_fn, max_source_length=max_source_length)

    train: list[Example] = []
    for name in train_names:
        sel = selected[name]
        skipped += len(sel.train_skipped)
        _warn_skipped(log, sel.path, sel.train_skipped, "training instance(s) without a non-empty output")
        sources = encode(sel.task, [inst for inst, _ in sel.train])
        train.extend(
            Example(inst["id"], name, sel.task.category, source, targets[0], tuple(inst["output"]), targets)
            for (inst, targets), source in zip(sel.train, sources, strict=True)
        )

    def evaluation(names: list[str]) -> list[Example]:
        nonlocal skipped
        examples: list[Example] = []
        for name in names:
            sel = selected[name]
            skipped += len(sel.eval_skipped)
            _warn_skipped(log, sel.path, sel.eval_skipped, "evaluation instance(s) without any output")
            sources = encode(sel.task, [inst for inst, _ in sel.eval])
            examples.extend(
                Example(inst["id"], name, sel.task.category, source, refs[0], refs)
                for (inst, refs), source in zip(sel.eval, sources, strict=True)
            )
        return examples

    validation = evaluation(validation_names)
    test = evaluation(test_names)

    if not train:
        raise _fail(train_file, "no training examples left (every instance was skipped)")
    if not test:
        raise _fail(test_file, "no test examples left (every instance was skipped)")
    if validation_names and not validation:
        raise _fail(train_file, "no validation examples left (every instance was skipped)")

    stats = {
        "train_tasks": len(train_names),
        "validation_tasks": len(validation_names),
        "test_tasks": len(test_names),
        "train_instances": len(train),
        "validation_instances": len(validation),
        "test_instances": len(test),
        "skipped_instances": skipped,
        "excluded_non_english_tasks": non_english,
        "excluded_tasks": excluded_count,
    }
    log.info(
        "SuperNI %s: %d/%d/%d train/validation/test tasks, %d/%d/%d examples",
        config.split,
        stats["train_tasks"],
        stats["validation_tasks"],
        stats["test_tasks"],
        stats["train_instances"],
        stats["validation_instances"],
        stats["test_instances"],
    )
    return SuperNIData(
        train=train,
        validation=validation,
        test=test,
        train_tasks=train_names,
        validation_tasks=validation_names,
        test_tasks=test_names,
        stats=stats,
    )
