"""SuperNI task files: one ``tasks/<task>.json`` of the ``allenai/natural-instructions`` layout, read and validated.

A task file is a JSON object with the keys of :data:`REQUIRED_TASK_KEYS`; a malformed one is reported in one
line naming the file (and the JSON line and column). Nothing here selects or encodes instances: see
:mod:`peftbench.data.superni` (which instances) and :mod:`peftbench.data.encoding` (the prompt text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.errors import PeftbenchError

__all__ = ["REQUIRED_TASK_KEYS", "Task", "load_task"]

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
