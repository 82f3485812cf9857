"""Tests for the procedural SuperNI-format demo data (peftbench.demo)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peftbench.demodata import (
    DEMO_SPLIT,
    PRETRAIN_SPLIT,
    generate_demo_data,
    tasks,
    words,
    writer,
)
from peftbench.errors import PeftbenchError
from tests.conftest import require_superni_mini

NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    "twenty",
]  # fmt: skip
REAL_WORDS = set(
    words.NOUNS + words.ADJECTIVES + words.VERBS + words.ANIMALS + words.COLOURS + words.FRUITS + words.REVIEW_ITEMS
)


# ----------------------------------------------------------------------------------------------------------
# helpers


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _split(root: Path, split: str, part: str) -> list[str]:
    return (root / "splits" / split / f"{part}_tasks.txt").read_text(encoding="utf-8").splitlines()


def _task(root: Path, name: str) -> dict[str, Any]:
    return json.loads((root / "tasks" / f"{name}.json").read_text(encoding="utf-8"))


def _all_tasks(root: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((root / "tasks").glob("*.json"))}


def _words(sentence: str) -> set[str]:
    return {w.strip(".,!?").lower() for w in sentence.split()}


def _number(n: int) -> list[str]:
    return [str(n), NUMBER_WORDS[n]] if n <= 20 else [str(n)]


def _sum(text: str) -> list[str]:
    terms = text.split(" + ")
    assert all(re.fullmatch(r"\d+", t) for t in terms), text
    return _number(sum(int(t) for t in terms))


def _sentiment(text: str) -> list[str]:
    seen = _words(text)
    positive = bool(seen & set(words.POSITIVE_WORDS))
    negative = bool(seen & set(words.NEGATIVE_WORDS))
    assert positive != negative, text
    return ["positive" if positive else "negative"]


def _mention(pool: tuple[str, ...]) -> Callable[[str], list[str]]:
    return lambda text: ["yes" if _words(text) & set(pool) else "no"]


def _larger(text: str) -> list[str]:
    a, b = (int(t) for t in text.split(" or "))
    assert a != b
    return [str(max(a, b))]


def _fill_missing(text: str) -> list[str]:
    assert text.count("_") == 1, text
    pattern = re.compile(re.escape(text).replace("_", "[a-z]") + r"\Z")
    return [w for w in sorted(REAL_WORDS) if pattern.match(w)]


# Independent recomputation of every task's correct answers from the input. Lists are compared exactly
# except where the order of acceptable references is not fixed (marked as sets below).
CHECKERS: dict[str, Callable[[str], list[str]]] = {
    "task9001_demo_copy_text": lambda t: [t],
    "task9002_demo_reverse_words": lambda t: [" ".join(reversed(t.split()))],
    "task9003_demo_first_word": lambda t: [t.split()[0]],
    "task9004_demo_count_words": lambda t: _number(len(t.split())),
    "task9005_demo_add_two_numbers": _sum,
    "task9006_demo_animal_mention": _mention(words.ANIMALS),
    "task9007_demo_review_sentiment": _sentiment,
    "task9008_demo_uppercase": lambda t: [t.upper()],
    "task9009_demo_count_letters": lambda t: _number(len(t)),
    "task9010_demo_larger_number": _larger,
    "task9011_demo_fruit_mention": _mention(words.FRUITS),
    "task9012_demo_last_letter": lambda t: [t[-1]],
    "task9101_demo_repeat_input": lambda t: [t],
    "task9102_demo_last_word": lambda t: [t.split()[-1]],
    "task9103_demo_add_three_numbers": _sum,
    "task9104_demo_colour_mention": _mention(words.COLOURS),
    "task9105_demo_lowercase": lambda t: [t.lower()],
    "task9106_demo_opinion_polarity": _sentiment,
    "task9201_pretrain_repeat_second_word": lambda t: [t.split()[1]],
    "task9202_pretrain_fill_missing_letter": _fill_missing,
    "task9203_pretrain_join_words": lambda t: [t.replace(" ", "")],
    "task9204_pretrain_remove_digits": lambda t: [re.sub(r"\d", "", t)],
    "task9205_pretrain_spell_out": lambda t: [" ".join(t)],
    "task9206_pretrain_repeat_word_twice": lambda t: [f"{t} {t}"],
}
UNORDERED = {"task9202_pretrain_fill_missing_letter"}


def _expected(name: str, text: str) -> list[str]:
    return CHECKERS[name](text)


def _assert_outputs(name: str, text: str, outputs: list[str]) -> None:
    expected = _expected(name, text)
    if name in UNORDERED:
        assert set(outputs) == set(expected), (name, text, outputs)
        assert len(outputs) == len(set(outputs))
    else:
        assert outputs == expected, (name, text, outputs)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_data(tmp_path_factory.mktemp("demo") / "data", seed=0)


# ----------------------------------------------------------------------------------------------------------
# layout and format


def test_layout_and_return_value(dataset: Path) -> None:
    assert dataset.name == "data"
    for split in (DEMO_SPLIT, PRETRAIN_SPLIT):
        for part in ("train", "test"):
            assert (dataset / "splits" / split / f"{part}_tasks.txt").is_file()
    assert (dataset / "README.md").is_file()
    stamp = json.loads((dataset / "generator.json").read_text(encoding="utf-8"))
    assert stamp["version"] == writer.GENERATOR_VERSION
    assert stamp["seed"] == 0
    assert (stamp["train_instances"], stamp["test_instances"], stamp["pretrain_instances"]) == (100, 100, 200)
    # no temporary or leftover directories next to the dataset
    assert [p.name for p in dataset.parent.iterdir()] == ["data"]


def test_split_lists_match_task_files_and_constants(dataset: Path) -> None:
    listed = []
    for split in (DEMO_SPLIT, PRETRAIN_SPLIT):
        for part in ("train", "test"):
            names = _split(dataset, split, part)
            assert names, (split, part)
            assert len(names) == len(set(names))
            listed += names
    assert sorted(listed) == sorted(p.stem for p in (dataset / "tasks").glob("*.json"))
    assert _split(dataset, DEMO_SPLIT, "train") == list(tasks.DEMO_TRAIN_TASKS)
    assert _split(dataset, DEMO_SPLIT, "test") == list(tasks.DEMO_TEST_TASKS)
    assert _split(dataset, PRETRAIN_SPLIT, "train") == list(tasks.PRETRAIN_TRAIN_TASKS)
    assert _split(dataset, PRETRAIN_SPLIT, "test") == list(tasks.PRETRAIN_TEST_TASKS)
    assert 10 <= len(tasks.DEMO_TRAIN_TASKS) <= 12
    assert 5 <= len(tasks.DEMO_TEST_TASKS) <= 6
    assert 4 <= len(tasks.PRETRAIN_TRAIN_TASKS) + len(tasks.PRETRAIN_TEST_TASKS) <= 6


def test_task_names_look_like_superni(dataset: Path) -> None:
    for name in _all_tasks(dataset):
        match = re.fullmatch(r"task(\d{4})_[a-z0-9_]+", name)
        assert match, name
        assert int(match.group(1)) >= 9000
    numbers = [name.split("_")[0] for name in _all_tasks(dataset)]
    assert len(numbers) == len(set(numbers))


def test_the_writers_keys_are_those_of_real_superni_task_files() -> None:
    """The independent reference of the demo's task layout: every task file of the real SuperNI sample has exactly
    these keys, in this order (the natural-instructions repository's own files)."""
    files = sorted((require_superni_mini() / "tasks").glob("*.json"))
    assert files
    for path in files:
        assert list(json.loads(path.read_text())) == list(writer.SUPERNI_KEYS), path.name


def test_every_task_has_exactly_the_superni_keys_and_types(dataset: Path) -> None:
    for name, task in _all_tasks(dataset).items():
        assert list(task) == list(writer.SUPERNI_KEYS), name
        for key in writer.SUPERNI_KEYS:
            assert isinstance(task[key], list), (name, key)
        for key in ("Contributors", "Source", "URL", "Reasoning", "Domains", "Instance License"):
            assert all(isinstance(v, str) for v in task[key]), (name, key)
        assert len(task["Definition"]) == 1 and isinstance(task["Definition"][0], str)
        assert len(task["Categories"]) == 1 and isinstance(task["Categories"][0], str)
        for key in ("Input_language", "Output_language", "Instruction_language"):
            assert task[key] == ["English"]
        assert len(task["Positive Examples"]) == 2
        assert 1 <= len(task["Negative Examples"]) <= 2
        for example in task["Positive Examples"] + task["Negative Examples"]:
            assert set(example) == {"input", "output", "explanation"}
            assert all(isinstance(v, str) and v for v in example.values())
        for instance in task["Instances"]:
            assert list(instance) == ["id", "input", "output"]
            assert isinstance(instance["input"], str)
            assert isinstance(instance["output"], list) and instance["output"]
            assert all(isinstance(o, str) for o in instance["output"])


def test_files_are_plain_utf8_json_with_trailing_newline(dataset: Path) -> None:
    for path in (dataset / "tasks").glob("*.json"):
        raw = path.read_bytes()
        assert raw.endswith(b"}\n") and b"\r" not in raw
        json.loads(raw.decode("utf-8"))
    json.loads((dataset / "generator.json").read_text(encoding="utf-8"))


def test_ids_unique_and_well_formed(dataset: Path) -> None:
    seen: set[str] = set()
    for name, task in _all_tasks(dataset).items():
        prefix = name.split("_")[0]
        for instance in task["Instances"]:
            assert re.fullmatch(rf"{prefix}-[0-9a-f]{{32}}", instance["id"]), instance["id"]
            assert instance["id"] not in seen
            seen.add(instance["id"])
    assert len(seen) == 12 * 100 + 6 * 100 + 6 * 200


# ----------------------------------------------------------------------------------------------------------
# splits


def test_test_tasks_unseen_and_pretrain_disjoint(dataset: Path) -> None:
    demo_train = set(_split(dataset, DEMO_SPLIT, "train"))
    demo_test = set(_split(dataset, DEMO_SPLIT, "test"))
    pretrain = set(_split(dataset, PRETRAIN_SPLIT, "train")) | set(_split(dataset, PRETRAIN_SPLIT, "test"))
    assert not demo_test & demo_train
    assert not demo_test & pretrain
    assert not demo_train & pretrain
    assert not set(_split(dataset, PRETRAIN_SPLIT, "train")) & set(_split(dataset, PRETRAIN_SPLIT, "test"))


def test_test_split_categories_are_taught_in_training(dataset: Path) -> None:
    def categories(names: list[str]) -> set[str]:
        return {_task(dataset, n)["Categories"][0] for n in names}

    test_categories = categories(_split(dataset, DEMO_SPLIT, "test"))
    assert len(test_categories) >= 4
    assert test_categories <= categories(_split(dataset, DEMO_SPLIT, "train"))


def test_test_definitions_are_reworded(dataset: Path) -> None:
    train_definitions = {_task(dataset, n)["Definition"][0] for n in _split(dataset, DEMO_SPLIT, "train")}
    test_definitions = [_task(dataset, n)["Definition"][0] for n in _split(dataset, DEMO_SPLIT, "test")]
    assert len(set(test_definitions)) == len(test_definitions)
    assert not set(test_definitions) & train_definitions


# ----------------------------------------------------------------------------------------------------------
# content


def test_keyword_pools_do_not_overlap() -> None:
    neutral = {w.lower() for w in words.NOUNS + words.ADJECTIVES + words.VERBS}
    neutral |= {w.lower() for w in words.SUBJECTS} | _words(" ".join(words.PLACES))
    pools = [
        set(words.ANIMALS),
        set(words.COLOURS),
        set(words.FRUITS),
        set(words.POSITIVE_WORDS),
        set(words.NEGATIVE_WORDS),
    ]
    for i, pool in enumerate(pools):
        assert not pool & neutral, pool & neutral
        for other in pools[i + 1 :]:
            assert not pool & other


def test_every_task_has_an_independent_checker(dataset: Path) -> None:
    assert set(_all_tasks(dataset)) == set(CHECKERS)


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_instance_outputs_are_correct(dataset: Path, name: str) -> None:
    task = _task(dataset, name)
    for instance in task["Instances"]:
        _assert_outputs(name, instance["input"], instance["output"])


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_examples_right_and_negatives_wrong(dataset: Path, name: str) -> None:
    task = _task(dataset, name)
    for example in task["Positive Examples"]:
        assert example["output"] == _expected(name, example["input"])[0], example
    for example in task["Negative Examples"]:
        assert example["output"] not in _expected(name, example["input"]), example
        assert example["output"], example


def test_number_tasks_accept_digits_and_words(dataset: Path) -> None:
    outputs = [i["output"] for i in _task(dataset, "task9004_demo_count_words")["Instances"]]
    assert all(len(o) == 2 and o[1] == NUMBER_WORDS[int(o[0])] for o in outputs)


def test_classification_tasks_use_both_labels_in_balance(dataset: Path) -> None:
    for name in (
        "task9006_demo_animal_mention",
        "task9007_demo_review_sentiment",
        "task9011_demo_fruit_mention",
        "task9104_demo_colour_mention",
        "task9106_demo_opinion_polarity",
    ):
        labels = [i["output"][0] for i in _task(dataset, name)["Instances"]]
        counts = {label: labels.count(label) for label in set(labels)}
        assert len(counts) == 2, (name, counts)
        assert min(counts.values()) >= 30, (name, counts)


def test_instance_inputs_unique_and_distinct_from_examples(dataset: Path) -> None:
    for name, task in _all_tasks(dataset).items():
        inputs = [i["input"] for i in task["Instances"]]
        assert len(inputs) == len(set(inputs)), name
        example_inputs = {e["input"] for e in task["Positive Examples"] + task["Negative Examples"]}
        assert not example_inputs & set(inputs), name


def test_length_bounds(dataset: Path) -> None:
    for name, task in _all_tasks(dataset).items():
        assert len(task["Definition"][0]) <= 200, name
        pairs = [(i["input"], i["output"]) for i in task["Instances"]]
        pairs += [(e["input"], [e["output"]]) for e in task["Positive Examples"] + task["Negative Examples"]]
        for text, outputs in pairs:
            assert 0 < len(text) <= 60, (name, text)
            assert all(0 < len(o) <= 20 for o in outputs), (name, outputs)
            assert text.isascii() and all(o.isascii() for o in outputs)


def test_readme_records_seed_and_parameters(tmp_path: Path) -> None:
    root = generate_demo_data(tmp_path / "d", seed=7, train_instances=3, test_instances=4, pretrain_instances=5)
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "peftbench" in readme and "seed 7" in readme
    for text in ("train_instances=3", "test_instances=4", "pretrain_instances=5"):
        assert text in readme
    for name in tasks.DEMO_TEST_TASKS:
        assert name in readme


# ----------------------------------------------------------------------------------------------------------
# determinism, counts, idempotence


def test_same_seed_gives_byte_identical_files(tmp_path: Path, dataset: Path) -> None:
    again = generate_demo_data(tmp_path / "again", seed=0)
    assert _files(again) == _files(dataset)


def test_other_seed_gives_other_instances(tmp_path: Path, dataset: Path) -> None:
    other = generate_demo_data(tmp_path / "other", seed=1)
    assert sorted(_files(other)) == sorted(_files(dataset))
    for name, task in _all_tasks(dataset).items():
        other_task = _task(other, name)
        assert task["Definition"] == other_task["Definition"]
        assert task["Instances"] != other_task["Instances"], name
        ids = {i["id"] for i in task["Instances"]}
        assert not ids & {i["id"] for i in other_task["Instances"]}, name


def test_instance_counts_respected(tmp_path: Path) -> None:
    root = generate_demo_data(tmp_path / "d", seed=3, train_instances=7, test_instances=5, pretrain_instances=9)
    expected = {DEMO_SPLIT: (7, 5), PRETRAIN_SPLIT: (9, 9)}
    for split, (train_count, test_count) in expected.items():
        for part, count in (("train", train_count), ("test", test_count)):
            for name in _split(root, split, part):
                assert len(_task(root, name)["Instances"]) == count, (split, part, name)


def test_fewer_instances_are_a_prefix_of_more(tmp_path: Path, dataset: Path) -> None:
    small = generate_demo_data(tmp_path / "small", seed=0, train_instances=10, test_instances=10)
    for name in tasks.DEMO_TRAIN_TASKS + tasks.DEMO_TEST_TASKS:
        assert _task(small, name)["Instances"] == _task(dataset, name)["Instances"][:10]


def test_large_counts_still_terminate_and_are_correct(tmp_path: Path) -> None:
    root = generate_demo_data(tmp_path / "big", seed=0, train_instances=1500, test_instances=1, pretrain_instances=1)
    for name in ("task9012_demo_last_letter", "task9010_demo_larger_number", "task9005_demo_add_two_numbers"):
        instances = _task(root, name)["Instances"]
        assert len(instances) == 1500
        assert len({i["id"] for i in instances}) == 1500
        for instance in instances:
            _assert_outputs(name, instance["input"], instance["output"])


def test_second_call_is_a_no_op(tmp_path: Path) -> None:
    out = tmp_path / "data"
    generate_demo_data(out, seed=0, train_instances=5, test_instances=5, pretrain_instances=5)
    watched = [out, out / "generator.json", out / "tasks" / "task9001_demo_copy_text.json"]
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in watched]
    assert generate_demo_data(str(out), seed=0, train_instances=5, test_instances=5, pretrain_instances=5) == out
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in watched] == before


def test_other_parameters_replace_an_earlier_dataset(tmp_path: Path) -> None:
    out = tmp_path / "data"
    generate_demo_data(out, seed=0, train_instances=5, test_instances=5, pretrain_instances=5)
    generate_demo_data(out, seed=0, train_instances=6, test_instances=5, pretrain_instances=5)
    assert len(_task(out, "task9001_demo_copy_text")["Instances"]) == 6
    assert json.loads((out / "generator.json").read_text(encoding="utf-8"))["train_instances"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_incomplete_dataset_is_regenerated(tmp_path: Path) -> None:
    out = tmp_path / "data"
    generate_demo_data(out, seed=0, train_instances=5, test_instances=5, pretrain_instances=5)
    reference = _files(out)
    (out / "tasks" / "task9102_demo_last_word.json").unlink()
    generate_demo_data(out, seed=0, train_instances=5, test_instances=5, pretrain_instances=5)
    assert _files(out) == reference


def test_empty_existing_directory_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    generate_demo_data(out, seed=0, train_instances=2, test_instances=2, pretrain_instances=2)
    assert (out / "generator.json").is_file()


def test_refuses_to_overwrite_foreign_directory(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "precious.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(PeftbenchError, match="not peftbench demo data"):
        generate_demo_data(out, seed=0, train_instances=2, test_instances=2, pretrain_instances=2)
    assert (out / "precious.txt").read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_refuses_a_file_path(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.write_text("x", encoding="utf-8")
    with pytest.raises(PeftbenchError):
        generate_demo_data(out)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"train_instances": 0},
        {"test_instances": -1},
        {"pretrain_instances": 2.5},
        {"train_instances": True},
        {"seed": "0"},
        {"seed": None},
    ],
)
def test_rejects_bad_parameters(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(PeftbenchError):
        generate_demo_data(tmp_path / "data", **kwargs)
    assert not (tmp_path / "data").exists()


def test_generation_does_not_touch_global_random_state(tmp_path: Path) -> None:
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_demo_data(tmp_path / "d", seed=0, train_instances=2, test_instances=2, pretrain_instances=2)
    assert random.random() == expected
