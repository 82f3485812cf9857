"""SuperNI instances as prompt/target examples: the selected instances (:mod:`peftbench.data.superni`) encoded
as Tk-Instruct prompts (:mod:`peftbench.data.encoding`). Tokenisation and caching follow in
:mod:`peftbench.data.pipeline`.

Training examples keep every non-empty output as ``targets`` (each epoch draws one, see
:func:`peftbench.data.collate.with_epoch_targets`) and the first as ``target``; evaluation examples keep the
first output as ``target`` and all outputs as ``references``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from peftbench.config import DataConfig
from peftbench.data.encoding import encode_sources
from peftbench.data.superni import SelectedTask, Selection, load_superni

__all__ = ["Example", "SuperNIData", "encode_selection", "load_examples"]


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


def encode_selection(
    selection: Selection,
    config: DataConfig,
    lengths_fn: Callable[[list[str]], list[int]] | None = None,
    max_source_length: int | None = None,
) -> SuperNIData:
    """Encode every selected instance as a Tk-Instruct prompt, task by task.

    Args:
        selection: What :func:`peftbench.data.superni.load_superni` selected.
        config: The data settings; the encoding fields (``add_task_definition``, ``num_pos_examples``, ...)
            are read.
        lengths_fn: Optional ``Callable[[list[str]], list[int]]`` giving texts' lengths in model tokens (one
            batched tokenizer call per demonstration and task); with ``max_source_length`` it drops
            demonstration examples that do not fit (see :func:`peftbench.data.encoding.encode_source`).
        max_source_length: Token budget of a source, used only with ``lengths_fn``.
    """

    def encode(tasks: list[SelectedTask], training: bool) -> list[Example]:
        examples: list[Example] = []
        for sel in tasks:
            inputs = [instance["input"] for instance in sel.instances]
            sources = encode_sources(
                sel.task, inputs, config, lengths_fn=lengths_fn, max_source_length=max_source_length
            )
            for instance, targets, source in zip(sel.instances, sel.targets, sources, strict=True):
                references = tuple(instance["output"])
                examples.append(
                    Example(
                        instance["id"],
                        sel.task.name,
                        sel.task.category,
                        source,
                        targets[0],
                        references,
                        targets if training else (),
                    )
                )
        return examples

    return SuperNIData(
        train=encode(selection.train, training=True),
        validation=encode(selection.validation, training=False),
        test=encode(selection.test, training=False),
        train_tasks=[t.task.name for t in selection.train],
        validation_tasks=[t.task.name for t in selection.validation],
        test_tasks=[t.task.name for t in selection.test],
        stats=selection.stats,
    )


def load_examples(
    config: DataConfig,
    lengths_fn: Callable[[list[str]], list[int]] | None = None,
    max_source_length: int | None = None,
    log: logging.Logger | None = None,
) -> SuperNIData:
    """:func:`~peftbench.data.superni.load_superni` then :func:`encode_selection`: a split's examples, as text."""
    return encode_selection(load_superni(config, log=log), config, lengths_fn, max_source_length)
