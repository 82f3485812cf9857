"""Which SuperNI tasks and instances a run uses: the split files read, tasks filtered and carved, instances
selected. Nothing here builds prompts (:mod:`peftbench.data.encoding`, :mod:`peftbench.data.examples`).

Expected layout (the original ``allenai/natural-instructions`` repository layout)::

    <data_dir>/tasks/<task>.json
    <data_dir>/splits/<split>/train_tasks.txt
    <data_dir>/splits/<split>/test_tasks.txt
    <data_dir>/splits/<split>/excluded_tasks.txt   (optional)

Selection follows Tk-Instruct (``src/ni_dataset.py``): training instances are shuffled and capped per task
(``max_num_instances_per_task``); evaluation tasks use the first 100 instances of each task file (the official
label-balanced evaluation set) and then the first ``max_eval_instances_per_task`` of those (Tk-Instruct
shuffles before capping; we keep file order so a smaller cap is a prefix of the official set). A training
instance keeps all its non-empty outputs as its targets and each epoch trains on one of them drawn afresh
(Tk-Instruct's collator: ``random.choice(output)`` per batch; here deterministic in the training seed, the
epoch and the instance, see :func:`peftbench.data.collate.with_epoch_targets`); evaluation instances keep all
their outputs as references, exactly as the file has them (empty strings included, as the official reference
file keeps them). Evaluation keeps instances with an empty input; training skips instances without a
non-empty output (an empty target would teach the model to stop at once); see docs/fidelity.md.

All randomness goes through ``random.Random`` objects seeded from ``data.seed`` (and the task name, so a
task's sample does not depend on which other tasks are listed).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.config import DataConfig
from peftbench.data.tasks import Task, load_task
from peftbench.errors import PeftbenchError

__all__ = ["EVAL_INSTANCES_PER_TASK", "SelectedTask", "Selection", "load_superni", "read_task_list"]

logger = logging.getLogger(__name__)

EVAL_INSTANCES_PER_TASK = 100
"""SuperNI evaluates on the first 100 instances of each task file (label-balanced, put first on purpose)."""

_SHOW_MISSING = 3


@dataclass
class SelectedTask:
    """One task in one role, with the instances that role uses."""

    task: Task
    """The task's metadata (definition, category, demonstrations); its ``instances`` list is emptied."""
    path: Path
    """The task file."""
    instances: list[dict[str, Any]]
    """The selected instances (``id``, ``input``, ``output``), in the order the role uses them."""
    targets: list[tuple[str, ...]]
    """Per instance: training, the non-empty outputs an epoch draws a target from; evaluation, all outputs
    (the references)."""


@dataclass
class Selection:
    """What a split and a data config select, role by role, and the counts."""

    train: list[SelectedTask]
    """Training tasks in split-file order (validation tasks removed)."""
    validation: list[SelectedTask]
    """Validation tasks (carved out of the training tasks), sorted by name."""
    test: list[SelectedTask]
    """Test tasks in split-file order."""
    stats: dict[str, int]
    """Counts: ``{train,validation,test}_tasks``, ``{train,validation,test}_instances``,
    ``skipped_instances``, ``excluded_non_english_tasks``, ``excluded_tasks``."""


def _fail(path: Path, problem: str) -> PeftbenchError:
    return PeftbenchError(f"{path}: {problem}")


# --------------------------------------------------------------------------------------------- split files


def read_task_list(path: Path) -> list[str]:
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


# --------------------------------------------------------------------------------------------- selection


@dataclass
class _Candidates:
    """What one task would contribute in either role (it is not yet known which role it ends up in)."""

    task: Task
    path: Path
    train: list[tuple[dict[str, Any], tuple[str, ...]]]
    train_skipped: list[str]
    eval: list[tuple[dict[str, Any], tuple[str, ...]]]
    eval_skipped: list[str]


def _training_targets(instance: dict[str, Any]) -> tuple[str, ...]:
    """The outputs a training target may be: the non-empty ones, in file order (none: the instance is skipped)."""
    return tuple(o for o in instance["output"] if o.strip())


def _select(task: Task, path: Path, config: DataConfig) -> _Candidates:
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
    return _Candidates(slim, path, train, train_skipped, evaluation, eval_skipped)


def _warn_skipped(log: logging.Logger, path: Path, skipped: list[str], why: str) -> None:
    if skipped:
        shown = ", ".join(skipped[:_SHOW_MISSING]) + (", ..." if len(skipped) > _SHOW_MISSING else "")
        log.warning("%s: skipped %d %s (%s)", path, len(skipped), why, shown)


# --------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class SplitLists:
    """A split's task lists, checked against the task files present (nothing read from them)."""

    train_file: Path
    test_file: Path
    tasks_dir: Path
    train: list[str]
    """Training tasks listed (validation tasks not yet carved out), minus excluded ones."""
    test: list[str]
    excluded: int
    """How many listed tasks ``excluded_tasks.txt`` removed."""


def split_task_lists(config: DataConfig) -> SplitLists:
    """The split's task lists, after checking the layout without reading a task file: the data directory, the
    split's list files and ``tasks/`` exist, no task is both a training and a test task, every listed task has
    its file. The first step of :func:`load_superni`, and the data check before a multi-process launch.

    Raises:
        PeftbenchError: One line naming the offending file (as :func:`load_superni`).
    """
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

    train_names = read_task_list(train_file)
    test_names = read_task_list(test_file)
    excluded_file = split_dir / "excluded_tasks.txt"
    excluded_count = 0
    if excluded_file.is_file():
        excluded = set(read_task_list(excluded_file))
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

    return SplitLists(train_file, test_file, tasks_dir, train_names, test_names, excluded_count)


def load_superni(config: DataConfig, log: logging.Logger | None = None) -> Selection:
    """Read a SuperNI split and select its tasks and instances (no prompt is built here).

    Steps: read ``train_tasks.txt`` / ``test_tasks.txt`` of the split, drop tasks listed in
    ``excluded_tasks.txt`` (if present), load every listed task file, drop non-English tasks when
    ``english_only`` (SuperNI's English track: input, output and instruction languages all ``["English"]``;
    the official ``default`` split only lists such tasks, Tk-Instruct itself does not filter), carve
    ``num_validation_tasks`` validation tasks out of the training tasks (``random.Random(seed).sample`` of the
    sorted training names, so independent of file order), keep ``num_train_tasks`` of the rest, then select
    instances.

    Args:
        config: The data settings, already checked (:func:`peftbench.config.validate` or
            :func:`peftbench.config.check_data`); only the location and selection fields are read.
        log: Logger for warnings (skipped instances) and the summary; defaults to this module's logger.

    Returns:
        Each role's tasks with their selected instances, and the counts. Same config, same result (same order).

    Raises:
        PeftbenchError: A missing directory or split file, a task named in a split without its file, a
            malformed task file, a task in both train and test lists, too many validation tasks, or a role
            left without instances. The message is one line naming the offending file.
    """
    log = log if log is not None else logger
    lists = split_task_lists(config)
    candidates, kept, non_english = _read_tasks(lists, config, log)
    for role, what, path in (("train", "training", lists.train_file), ("test", "test", lists.test_file)):
        if not kept[role]:
            raise _fail(path, f"no {what} tasks left after exclusions and the English-only filter")
    train_names, validation_names = _carve_training(kept["train"], lists.train_file, config)
    test_names = kept["test"]
    skipped: list[int] = []
    train = _pick_instances(candidates, train_names, True, log, skipped)
    validation = _pick_instances(candidates, validation_names, False, log, skipped)
    test = _pick_instances(candidates, test_names, False, log, skipped)
    roles = ((train, lists.train_file, "training"), (test, lists.test_file, "test"))
    for tasks, path, what in (*roles, *([(validation, lists.train_file, "validation")] if validation else [])):
        if not _count(tasks):
            raise _fail(path, f"no {what} examples left (every instance was skipped)")
    stats = {
        "train_tasks": len(train_names),
        "validation_tasks": len(validation_names),
        "test_tasks": len(test_names),
        "train_instances": _count(train),
        "validation_instances": _count(validation),
        "test_instances": _count(test),
        "skipped_instances": sum(skipped),
        "excluded_non_english_tasks": non_english,
        "excluded_tasks": lists.excluded,
    }
    log.info(
        "SuperNI %s: %d/%d/%d train/validation/test tasks, %d/%d/%d examples",
        config.split,
        *(stats[f"{role}_tasks"] for role in ("train", "validation", "test")),
        *(stats[f"{role}_instances"] for role in ("train", "validation", "test")),
    )
    return Selection(train=train, validation=validation, test=test, stats=stats)


def _read_tasks(
    lists: SplitLists, config: DataConfig, log: logging.Logger
) -> tuple[dict[str, _Candidates], dict[str, list[str]], int]:
    """Every listed task file read and its instances pre-selected; the names kept per role (train, test) after
    the English-only filter, and how many tasks that filter dropped."""
    candidates: dict[str, _Candidates] = {}
    kept: dict[str, list[str]] = {"train": [], "test": []}
    non_english = 0
    for role, names in (("train", lists.train), ("test", lists.test)):
        for name in names:
            path = lists.tasks_dir / f"{name}.json"
            task = load_task(path)
            if config.english_only and not task.is_english:
                non_english += 1
                log.info("%s: excluded, not an English task", path)
                continue
            candidates[name] = _select(task, path, config)
            kept[role].append(name)
    return candidates, kept, non_english


def _carve_training(names: list[str], train_file: Path, config: DataConfig) -> tuple[list[str], list[str]]:
    """The training and validation task names: ``num_validation_tasks`` carved out of the training tasks
    (``random.Random(seed).sample`` of the sorted names, so independent of file order), then ``num_train_tasks``
    of the rest kept (a seeded shuffle of the sorted names); both in the split file's order."""
    if config.num_validation_tasks >= len(names):
        raise _fail(
            train_file,
            f"num_validation_tasks={config.num_validation_tasks} leaves no training tasks "
            f"(only {len(names)} available)",
        )
    validation = sorted(random.Random(config.seed).sample(sorted(names), config.num_validation_tasks))
    held_out = set(validation)
    train = [n for n in names if n not in held_out]
    if config.num_train_tasks is not None:
        if config.num_train_tasks > len(train):
            raise _fail(
                train_file,
                f"num_train_tasks={config.num_train_tasks} but only {len(train)} training tasks are available",
            )
        order = sorted(train)
        random.Random(f"train-tasks-{config.seed}").shuffle(order)
        keep = set(order[: config.num_train_tasks])
        train = [n for n in train if n in keep]
    return train, validation


def _pick_instances(
    candidates: dict[str, _Candidates], names: list[str], training: bool, log: logging.Logger, skipped: list[int]
) -> list[SelectedTask]:
    """The named tasks with the instances of their role (training or evaluation); warns about the instances a
    role skips and appends their number to ``skipped``."""
    why = "training instance(s) without a non-empty output" if training else "evaluation instance(s) without any output"
    chosen = []
    for name in names:
        task = candidates[name]
        picked, dropped = (task.train, task.train_skipped) if training else (task.eval, task.eval_skipped)
        skipped.append(len(dropped))
        _warn_skipped(log, task.path, dropped, why)
        chosen.append(SelectedTask(task.task, task.path, [i for i, _ in picked], [t for _, t in picked]))
    return chosen


def _count(tasks: list[SelectedTask]) -> int:
    return sum(len(t.instances) for t in tasks)
