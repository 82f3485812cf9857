"""Tk-Instruct prompt encoding of SuperNI instances (text only, no tokenisation).

This reproduces, character for character, the source text built by ``DataCollatorForNI.__call__`` in
Tk-Instruct (``yizhongw/Tk-Instruct``, ``src/ni_collator.py``), the encoding used by Super-NaturalInstructions
and by the PEFT study arXiv 2411.16775:

* optional task name: ``"<task name>. "``;
* optional definition: ``"Definition: <Definition[0].strip()>"``, a ``"."`` appended when the text does not
  already end in ASCII punctuation (``string.punctuation``), then ``"\\n\\n"``;
* the first ``num_pos_examples`` positive examples, each
  ``" Positive Example {i} -\\nInput: <input>[.]\\n Output: <output>[.]\\n"``, optionally followed by
  ``" Explanation: <explanation>[.]\\n"``, then ``"\\n"`` (note the leading spaces on the first and the
  ``Output``/``Explanation`` lines: they are in the original);
* the first ``num_neg_examples`` negative examples, the same with ``"Negative Example"``;
* the instance: ``"Now complete the following example -\\nInput: <input>[.]\\nOutput: "``.

``[.]`` is Tk-Instruct's add-punctuation-if-missing rule: after appending a field, a ``"."`` is added when the
last character of the text built so far is not in ``string.punctuation`` (so an empty field gets one too).

Tk-Instruct drops demonstration examples that would overflow ``max_source_length`` tokens: an example is
kept only while ``len(tokenizer(definition + " ".join(kept) + example + task_input)) <= max_source_length``,
and the first example that does not fit ends the loop (positives and negatives are tried separately). The
same check, with its quirks (the task name is not measured; already kept examples are joined with ``" "``
for measuring but with ``""`` in the prompt), is available here through ``length_fn``. Tk-Instruct then
truncates the whole source to ``max_source_length`` tokens, which can cut off the final ``"Output: "`` cue;
this module never truncates: truncation that keeps the cue is done at tokenisation time.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from peftbench.config import DataConfig
from peftbench.data.tasks import Task

__all__ = ["INSTANCE_HEADER", "OUTPUT_CUE", "encode_source", "encode_sources"]

OUTPUT_CUE = "Output: "
"""The final cue every encoded source ends with (Tk-Instruct: ``task_input += "Output: "``)."""

INSTANCE_HEADER = "Now complete the following example -\n"
"""The line that introduces the instance to solve."""


def _period_if_missing(text: str) -> str:
    """Tk-Instruct's rule: ``if not text[-1] in string.punctuation: text += "."``."""
    if not text or text[-1] not in string.punctuation:
        return text + "."
    return text


def _format_demonstration(kind: str, number: int, example: Mapping[str, Any], add_explanation: bool) -> str:
    """One demonstration block, exactly as Tk-Instruct builds ``pos_example_str`` / ``neg_example_str``."""
    text = f" {kind} Example {number} -\n"
    text += f"Input: {str(example['input']).strip()}"
    text = _period_if_missing(text)
    text += "\n"
    text += f" Output: {str(example['output']).strip()}"
    text = _period_if_missing(text)
    text += "\n"
    if add_explanation and "explanation" in example:
        text += f" Explanation: {str(example['explanation']).strip()}"
        text = _period_if_missing(text)
        text += "\n"
    text += "\n"
    return text


def _add_demonstrations(
    kind: str,
    examples: Sequence[Mapping[str, Any]],
    prefixes: Sequence[str],
    task_inputs: Sequence[str],
    config: DataConfig,
    fits: Callable[[list[str]], list[bool]] | None,
) -> list[list[str]]:
    """Each instance's demonstrations, in order, stopping at the first that does not fit (Tk-Instruct's
    ``break``). One ``fits`` call per demonstration for all instances still adding (a batched tokenizer
    call); without ``fits`` every requested demonstration is kept."""
    kept: list[list[str]] = [[] for _ in task_inputs]
    adding = list(range(len(task_inputs)))
    count = config.num_pos_examples if kind == "Positive" else config.num_neg_examples
    for idx, example in enumerate(examples[:count]):
        block = _format_demonstration(kind, idx + 1, example, config.add_explanation)
        if fits is not None and adding:
            ok = fits([prefixes[i] + " ".join(kept[i]) + block + task_inputs[i] for i in adding])
            adding = [i for i, good in zip(adding, ok, strict=True) if good]
        for i in adding:
            kept[i].append(block)
    return kept


def encode_source(
    task: Task,
    instance_input: str,
    config: DataConfig,
    length_fn: Callable[[str], int] | None = None,
    max_source_length: int | None = None,
) -> str:
    """Build the Tk-Instruct source text for one instance of ``task``.

    Args:
        task: The SuperNI task (its name, definition and demonstration examples are used).
        instance_input: The instance's ``input`` field (stripped here, as in Tk-Instruct).
        config: The data settings; its encoding switches (``add_task_definition``, ``num_pos_examples``,
            ``num_neg_examples``, ``add_explanation``, ``add_task_name``) say which task elements to include.
        length_fn: Optional length of a text in model tokens (e.g. ``lambda s: len(tok(s)["input_ids"])``).
            Together with ``max_source_length`` it drops demonstration examples that would not fit, like
            Tk-Instruct; if either is ``None`` all requested examples are kept.
        max_source_length: Token budget for the source, used only with ``length_fn``.

    Returns:
        The prompt text; it always ends with :data:`OUTPUT_CUE` (``"Output: "``) and is never truncated.
    """
    lengths_fn = None if length_fn is None else (lambda texts: [length_fn(t) for t in texts])
    return encode_sources(task, [instance_input], config, lengths_fn, max_source_length)[0]


def encode_sources(
    task: Task,
    instance_inputs: Sequence[str],
    config: DataConfig,
    lengths_fn: Callable[[list[str]], list[int]] | None = None,
    max_source_length: int | None = None,
) -> list[str]:
    """:func:`encode_source` for many instances of one task, measuring demonstrations in batches.

    ``lengths_fn`` takes a list of texts and returns their lengths in model tokens (one batched tokenizer
    call); the result is the same as calling :func:`encode_source` on each input.
    """
    task_inputs = []
    for instance_input in instance_inputs:
        task_input = INSTANCE_HEADER
        task_input += f"Input: {instance_input.strip()}"
        task_input = _period_if_missing(task_input)
        task_input += "\n"
        task_input += OUTPUT_CUE
        task_inputs.append(task_input)

    task_name = f"{task.name}. " if config.add_task_name else ""

    definition = ""
    if config.add_task_definition:
        definition = _period_if_missing("Definition: " + task.definition.strip())
        definition += "\n\n"

    fits = None
    if lengths_fn is not None and max_source_length is not None:
        budget = max_source_length

        def fits(texts: list[str]) -> list[bool]:
            return [n <= budget for n in lengths_fn(texts)]

    pos_examples = _add_demonstrations(
        "Positive", task.positive_examples, [definition] * len(task_inputs), task_inputs, config, fits
    )
    # Tk-Instruct measures negatives against definition + " ".join(pos) + " ".join(neg) + candidate + input.
    neg_examples = _add_demonstrations(
        "Negative",
        task.negative_examples,
        [definition + " ".join(pos) for pos in pos_examples],
        task_inputs,
        config,
        fits,
    )
    return [
        task_name + definition + "".join(pos) + "".join(neg) + task_input
        for pos, neg, task_input in zip(pos_examples, neg_examples, task_inputs, strict=True)
    ]
