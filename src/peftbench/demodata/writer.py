"""Deterministic SuperNI-format data from simple procedural tasks, for ``peftbench demo``.

No pretrained model can be downloaded for the demo, so it pre-trains and instruction-tunes tiny randomly
initialised models on CPU. This module writes the data they need in the layout of the natural-instructions repository::

    <out>/tasks/<task_name>.json           one file per task, with exactly the SuperNI keys
    <out>/splits/demo/train_tasks.txt      instruction-tuning tasks (the PEFT comparison trains on these)
    <out>/splits/demo/test_tasks.txt       unseen tasks that exercise skills the training tasks teach
    <out>/splits/pretrain/train_tasks.txt  generic byte-level tasks to briefly pre-train the random base model
    <out>/splits/pretrain/test_tasks.txt   a held-out generic task to monitor that pre-training
    <out>/README.md                        how the data was generated
    <out>/generator.json                   the generator version and parameters (the completeness stamp)

The demo test tasks are never trained on: each is a reworded relative of a training skill (copy -> "repeat the
input", first word / last letter -> last word, add two numbers -> add three numbers, animal / fruit mention ->
colour mention, uppercase -> lowercase, review sentiment -> opinion polarity), so cross-task generalisation is
learnable and measurable by exact match and ROUGE-L. The pre-training tasks are disjoint from the demo tasks.

All strings are short (inputs at most :data:`MAX_INPUT_CHARS`, outputs at most :data:`MAX_OUTPUT_CHARS`
characters) so that prompts stay short for tiny models on a CPU (the demo's tokenizer is a small BPE trained on
these texts; the tiny presets' is byte-level). Every random choice is drawn from a
:class:`random.Random` seeded from the user's seed and the task name, so the same parameters give
byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peftbench.demodata.tasks import (
    DEMO_SPLIT,
    DEMO_TEST_SPECS,
    DEMO_TRAIN_SPECS,
    PRETRAIN_SPLIT,
    PRETRAIN_TEST_SPECS,
    PRETRAIN_TRAIN_SPECS,
    TaskSpec,
)
from peftbench.demodata.words import MAX_INPUT_CHARS, MAX_OUTPUT_CHARS, Instance
from peftbench.errors import PeftbenchError
from peftbench.io import temporary_dir

GENERATOR_VERSION = 2
"""Bumped whenever the generated data changes for the same parameters; part of the completeness stamp."""

GENERATOR_NAME = "peftbench.data.demo_tasks"  # the stamp's identity: the module's former path, kept so that
# demo data generated before the move stays recognised as peftbench's
STAMP_FILE = "generator.json"

SUPERNI_KEYS: tuple[str, ...] = (
    "Contributors",
    "Source",
    "URL",
    "Categories",
    "Reasoning",
    "Definition",
    "Input_language",
    "Output_language",
    "Instruction_language",
    "Domains",
    "Positive Examples",
    "Negative Examples",
    "Instances",
    "Instance License",
)
"""The keys of a SuperNI task file, in the order the original files use."""

# ----------------------------------------------------------------------------------------------------
# Generation.


def _derived_seed(seed: int, task_name: str, purpose: str) -> int:
    """A 64-bit seed for one task and purpose, stable across processes and Python versions."""
    digest = hashlib.sha256(f"peftbench-demo/{seed}/{task_name}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _valid(instance: Instance) -> bool:
    text, outputs = instance
    return 0 < len(text) <= MAX_INPUT_CHARS and all(0 < len(o) <= MAX_OUTPUT_CHARS for o in outputs)


def _build_task(spec: TaskSpec, seed: int, num_instances: int) -> dict[str, Any]:
    """The SuperNI task dictionary for ``spec``: examples first, then instances with unseen inputs."""
    example_rng = random.Random(_derived_seed(seed, spec.name, "examples"))
    instance_rng = random.Random(_derived_seed(seed, spec.name, "instances"))
    id_rng = random.Random(_derived_seed(seed, spec.name, "ids"))

    seen: set[str] = set()

    def fresh(rng: random.Random) -> Instance:
        while True:
            instance = spec.make(rng)
            if _valid(instance) and instance[0] not in seen:
                seen.add(instance[0])
                return instance

    positives = []
    for _ in range(2):
        text, outputs = fresh(example_rng)
        positives.append(
            {
                "input": text,
                "output": outputs[0],
                "explanation": spec.right_explanation.format(input=text, output=outputs[0]),
            }
        )
    negatives = []
    while len(negatives) < spec.negatives:
        text, outputs = fresh(example_rng)
        wrong = spec.wrong(example_rng, text, outputs)
        if wrong in outputs or not 0 < len(wrong) <= MAX_OUTPUT_CHARS:
            continue
        negatives.append(
            {
                "input": text,
                "output": wrong,
                "explanation": spec.wrong_explanation.format(input=text, output=wrong, correct=outputs[0]),
            }
        )

    instances = []
    ids: set[str] = set()
    attempts_left = 50 * num_instances + 1000  # after that, allow repeated inputs rather than loop forever
    while len(instances) < num_instances:
        text, outputs = spec.make(instance_rng)
        if not _valid((text, outputs)):
            continue
        attempts_left -= 1
        if text in seen and attempts_left > 0:
            continue
        seen.add(text)
        instance_id = f"{spec.prefix}-{id_rng.getrandbits(128):032x}"
        while instance_id in ids:
            instance_id = f"{spec.prefix}-{id_rng.getrandbits(128):032x}"
        ids.add(instance_id)
        instances.append({"id": instance_id, "input": text, "output": outputs})

    values: dict[str, Any] = {
        "Contributors": ["peftbench"],
        "Source": ["peftbench_demo"],
        "URL": [],
        "Categories": [spec.category],
        "Reasoning": [],
        "Definition": [spec.definition],
        "Input_language": ["English"],
        "Output_language": ["English"],
        "Instruction_language": ["English"],
        "Domains": [spec.domain],
        "Positive Examples": positives,
        "Negative Examples": negatives,
        "Instances": instances,
        "Instance License": ["Apache 2.0"],
    }
    return {key: values[key] for key in SUPERNI_KEYS}


def _params(seed: int, train_instances: int, test_instances: int, pretrain_instances: int) -> dict[str, Any]:
    return {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "train_instances": train_instances,
        "test_instances": test_instances,
        "pretrain_instances": pretrain_instances,
    }


def _dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")


def _split_table(title: str, specs: Sequence[TaskSpec], per_task: int) -> list[str]:
    lines = [f"### {title} ({per_task} instances per task)", "", "| task | category |", "| --- | --- |"]
    lines += [f"| `{spec.name}` | {spec.category} |" for spec in specs]
    return [*lines, ""]


def _readme(params: dict[str, Any]) -> str:
    lines = [
        "# peftbench demo data",
        "",
        f"Generated by peftbench (`{GENERATOR_NAME}`, generator version {params['version']}) with "
        f"seed {params['seed']}, train_instances={params['train_instances']}, "
        f"test_instances={params['test_instances']}, pretrain_instances={params['pretrain_instances']}.",
        "",
        "These are small procedural tasks in the Super-NaturalInstructions format and directory layout, "
        "for `peftbench demo`. They are not real SuperNI data. The same parameters always give "
        "byte-identical files; `generator.json` records them.",
        "",
        f"- `splits/{DEMO_SPLIT}/`: instruction tuning; the test tasks are unseen during training.",
        f"- `splits/{PRETRAIN_SPLIT}/`: generic byte-level tasks to pre-train the tiny random base model; "
        "disjoint from the demo tasks.",
        "",
        "## Tasks",
        "",
    ]
    lines += _split_table(f"{DEMO_SPLIT} / train", DEMO_TRAIN_SPECS, params["train_instances"])
    lines += _split_table(f"{DEMO_SPLIT} / test", DEMO_TEST_SPECS, params["test_instances"])
    lines += _split_table(f"{PRETRAIN_SPLIT} / train", PRETRAIN_TRAIN_SPECS, params["pretrain_instances"])
    lines += _split_table(f"{PRETRAIN_SPLIT} / test", PRETRAIN_TEST_SPECS, params["pretrain_instances"])
    return "\n".join(lines)


def _write_dataset(root: Path, params: dict[str, Any]) -> None:
    """Write every file of the dataset under ``root``; the stamp comes last."""
    seed = params["seed"]
    train, test, pretrain = params["train_instances"], params["test_instances"], params["pretrain_instances"]
    splits = (
        (DEMO_SPLIT, DEMO_TRAIN_SPECS, DEMO_TEST_SPECS, train, test),
        (PRETRAIN_SPLIT, PRETRAIN_TRAIN_SPECS, PRETRAIN_TEST_SPECS, pretrain, pretrain),
    )
    for split, train_specs, test_specs, train_count, test_count in splits:
        for specs, count in ((train_specs, train_count), (test_specs, test_count)):
            for spec in specs:
                _write_text(root / "tasks" / f"{spec.name}.json", _dump_json(_build_task(spec, seed, count)))
        _write_text(root / "splits" / split / "train_tasks.txt", "".join(f"{s.name}\n" for s in train_specs))
        _write_text(root / "splits" / split / "test_tasks.txt", "".join(f"{s.name}\n" for s in test_specs))
    _write_text(root / "README.md", _readme(params))
    _write_text(root / STAMP_FILE, _dump_json(params))


def _read_stamp(root: Path) -> dict[str, Any] | None:
    try:
        stamp = json.loads((root / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    """Whether ``root`` holds a finished dataset generated with exactly ``params``."""
    if _read_stamp(root) != params:
        return False
    for split in (DEMO_SPLIT, PRETRAIN_SPLIT):
        for listing in ("train_tasks.txt", "test_tasks.txt"):
            try:
                names = (root / "splits" / split / listing).read_text(encoding="utf-8").split()
            except OSError:
                return False
            if not all((root / "tasks" / f"{name}.json").is_file() for name in names):
                return False
    return True


def _is_ours_or_empty(root: Path) -> bool:
    """Whether ``root`` may be replaced: an empty directory or one this generator wrote."""
    if not root.is_dir():
        return False
    if not any(root.iterdir()):
        return True
    stamp = _read_stamp(root)
    return stamp is not None and stamp.get("generator") == GENERATOR_NAME


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PeftbenchError(f"{name} must be a positive integer, got {value!r}")
    return value


def _install(tmp: Path, out: Path, params: dict[str, Any]) -> None:
    """Move the finished ``tmp`` directory to ``out`` in one rename (replacing a stale dataset if needed)."""
    try:
        os.replace(tmp, out)  # succeeds when out is missing or an empty directory
        return
    except OSError:
        pass
    if _is_complete(out, params):  # another process finished the same dataset first
        return
    if not _is_ours_or_empty(out):
        raise PeftbenchError(f"{out} exists and is not peftbench demo data; choose another directory")
    old = tmp.with_name(tmp.name + ".old")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def generate_demo_data(
    out_dir: str | Path,
    seed: int = 0,
    train_instances: int = 100,
    test_instances: int = 100,
    pretrain_instances: int = 200,
) -> Path:
    """Write the demo tasks and splits in the natural-instructions layout, unless already there.

    The dataset is written into a temporary sibling directory and renamed into place at the end, so a
    half-written directory is never mistaken for a complete one. If ``out_dir`` already holds a complete
    dataset generated with the same parameters and generator version (see ``generator.json``), nothing is
    rewritten. A dataset from other parameters is replaced; any other non-empty directory is left alone.

    Args:
        out_dir: Directory to create (its parent is created if needed), e.g. ``runs/demo/data``.
        seed: Seed for every random choice; the same seed and counts give byte-identical files.
        train_instances: Instances per task in the demo split's training tasks.
        test_instances: Instances per task in the demo split's test tasks.
        pretrain_instances: Instances per task in the pre-training split (train and test tasks).

    Returns:
        The dataset root (``out_dir`` as a :class:`~pathlib.Path`), which contains ``tasks/`` and ``splits/``.

    Raises:
        PeftbenchError: If a count is not a positive integer, the seed is not an integer, or ``out_dir``
            is a file or a non-empty directory that this generator did not write.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PeftbenchError(f"seed must be an integer, got {seed!r}")
    params = _params(
        seed,
        _check_count("train_instances", train_instances),
        _check_count("test_instances", test_instances),
        _check_count("pretrain_instances", pretrain_instances),
    )
    out = Path(out_dir)
    target = Path(os.path.abspath(out))  # normalised, so that its name and parent are meaningful
    if _is_complete(target, params):
        return out
    if target.exists() and not _is_ours_or_empty(target):
        raise PeftbenchError(f"{out} exists and is not peftbench demo data; choose another directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_dir(target.parent, prefix=f".{target.name}.tmp-")
    try:
        _write_dataset(tmp, params)
        _install(tmp, target, params)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
