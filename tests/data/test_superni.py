"""Loading SuperNI splits: real superni-mini data, and every error case built in tmp_path."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from peftbench.config import DataConfig, check_data
from peftbench.data.encoding import OUTPUT_CUE
from peftbench.data.examples import Example, SuperNIData, load_examples
from peftbench.data.superni import load_superni
from peftbench.data.tasks import load_task
from peftbench.errors import PeftbenchError

SUPERNI_MINI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "superni-mini"


@pytest.fixture(scope="module")
def mini_dir() -> Path:
    if not (SUPERNI_MINI / "tasks").is_dir() or not (SUPERNI_MINI / "splits" / "mini").is_dir():
        pytest.skip(f"superni-mini data not available at {SUPERNI_MINI}")
    return SUPERNI_MINI


def _names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _load(data_dir: Path, split: str = "mini", **kwargs: Any) -> SuperNIData:
    return load_examples(DataConfig(data_dir=str(data_dir), split=split, **kwargs))


def _by_task(examples: list[Example]) -> dict[str, list[Example]]:
    grouped: dict[str, list[Example]] = {}
    for example in examples:
        grouped.setdefault(example.task, []).append(example)
    return grouped


def _assert_one_line_error(excinfo: pytest.ExceptionInfo[PeftbenchError], path: Path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# --------------------------------------------------------------------------------------------- real data


def test_mini_split_counts_and_categories(mini_dir: Path) -> None:
    data = _load(mini_dir)
    assert data.stats == {
        "train_tasks": 22,
        "validation_tasks": 0,
        "test_tasks": 12,
        "train_instances": 1356,
        "validation_instances": 0,
        "test_instances": 761,
        "skipped_instances": 0,
        "excluded_non_english_tasks": 0,
        "excluded_tasks": 0,
    }
    assert data.train_tasks == _names(mini_dir / "splits" / "mini" / "train_tasks.txt")
    assert data.test_tasks == _names(mini_dir / "splits" / "mini" / "test_tasks.txt")
    assert data.validation == [] and data.validation_tasks == []
    assert len(data.train) == 1356 and len(data.test) == 761
    # The README: 12 test categories (one per task) and 19 training categories.
    assert len({e.category for e in data.test}) == 12
    assert len({e.category for e in data.train}) == 19
    assert {e.category for e in data.train if e.task == "task1146_country_capital"} == {"Misc."}
    assert {e.category for e in data.test if e.task == "task039_qasc_find_overlapping_words"} == {"Overlap Extraction"}
    for example in data.train + data.test:
        assert example.source.startswith("Definition: ")
        assert example.source.endswith(OUTPUT_CUE)
        assert example.target in example.references
        assert example.id.startswith(example.task.split("_")[0] + "-")


def test_instance_caps(mini_dir: Path) -> None:
    data = _load(mini_dir, max_train_instances_per_task=10, max_eval_instances_per_task=5)
    assert data.stats["train_instances"] == 22 * 10
    assert data.stats["test_instances"] == 12 * 5
    assert {len(v) for v in _by_task(data.train).values()} == {10}
    assert {len(v) for v in _by_task(data.test).values()} == {5}


def test_eval_instances_are_first_in_file_order(mini_dir: Path) -> None:
    data = _load(mini_dir, max_eval_instances_per_task=7, num_validation_tasks=2)
    for name, examples in {**_by_task(data.test), **_by_task(data.validation)}.items():
        task = load_task(mini_dir / "tasks" / f"{name}.json")
        assert [e.id for e in examples] == [i["id"] for i in task.instances[:7]]
        assert [e.references for e in examples] == [tuple(i["output"]) for i in task.instances[:7]]
        assert [e.target for e in examples] == [i["output"][0] for i in task.instances[:7]]
    qasc = _by_task(data.test)["task039_qasc_find_overlapping_words"]
    assert qasc[0].id == "task039-eb722ae4605f46f1afd5c61fb226948c"
    assert qasc[0].target == "host"
    assert qasc[2].references == ("converted", "electric", "energy", "heat", "kinetic", "motor")
    assert qasc[2].target == "converted"


def test_training_instances_are_a_seeded_shuffle(mini_dir: Path) -> None:
    a = _by_task(_load(mini_dir, max_train_instances_per_task=10).train)
    b = _by_task(_load(mini_dir, max_train_instances_per_task=10, seed=7).train)
    task = load_task(mini_dir / "tasks" / "task1146_country_capital.json")
    all_ids = [i["id"] for i in task.instances]
    ids_a = [e.id for e in a[task.name]]
    assert len(set(ids_a)) == 10 and set(ids_a) <= set(all_ids)
    assert ids_a != all_ids[:10]
    assert ids_a != [e.id for e in b[task.name]]
    outputs = {i["id"]: tuple(i["output"]) for i in task.instances}
    for example in a[task.name]:
        assert example.references == outputs[example.id]
        assert example.target == outputs[example.id][0]


def test_validation_carving(mini_dir: Path, tmp_path: Path) -> None:
    train_list = _names(mini_dir / "splits" / "mini" / "train_tasks.txt")
    a = _load(mini_dir, num_validation_tasks=5, seed=42)
    b = _load(mini_dir, num_validation_tasks=5, seed=42)
    c = _load(mini_dir, num_validation_tasks=5, seed=43)
    assert a.validation_tasks == b.validation_tasks
    assert a.validation_tasks != c.validation_tasks
    assert len(a.validation_tasks) == 5 and a.validation_tasks == sorted(a.validation_tasks)
    assert set(a.validation_tasks).isdisjoint(a.train_tasks)
    assert set(a.validation_tasks) | set(a.train_tasks) == set(train_list)
    assert a.train_tasks == [t for t in train_list if t not in a.validation_tasks]
    assert {e.task for e in a.validation} == set(a.validation_tasks)
    assert {e.task for e in a.train}.isdisjoint(a.validation_tasks)
    assert a.stats["validation_tasks"] == 5 and a.stats["train_tasks"] == 17
    # Independent of the order of the split file.
    (tmp_path / "tasks").symlink_to(mini_dir / "tasks", target_is_directory=True)
    split = tmp_path / "splits" / "reversed"
    split.mkdir(parents=True)
    split.joinpath("train_tasks.txt").write_text("\n".join(reversed(train_list)) + "\n")
    split.joinpath("test_tasks.txt").write_text((mini_dir / "splits" / "mini" / "test_tasks.txt").read_text())
    reordered = _load(tmp_path, split="reversed", num_validation_tasks=5, seed=42)
    assert reordered.validation_tasks == a.validation_tasks
    assert reordered.validation == a.validation


def test_whole_load_is_deterministic(mini_dir: Path) -> None:
    config = DataConfig(
        data_dir=str(mini_dir),
        split="mini",
        max_train_instances_per_task=20,
        num_validation_tasks=3,
        num_pos_examples=2,
    )
    first = load_examples(config)
    second = load_examples(config)
    assert first == second
    assert [e.id for e in first.train] == [e.id for e in second.train]


def _char_lengths(texts: list[str]) -> list[int]:
    return [len(t) for t in texts]


def test_lengths_fn_is_passed_to_encoding(mini_dir: Path) -> None:
    config = DataConfig(data_dir=str(mini_dir), split="mini", max_eval_instances_per_task=3, num_pos_examples=2)
    data = load_examples(config, lengths_fn=_char_lengths, max_source_length=1)
    assert all(" Positive Example " not in e.source for e in data.train + data.test)
    unlimited = load_examples(config, lengths_fn=_char_lengths)
    assert all(" Positive Example 2 -\n" in e.source for e in unlimited.test)


def test_batched_demonstration_fitting_matches_one_instance_at_a_time(mini_dir: Path) -> None:
    """Batched measuring (one call per demonstration and task) keeps exactly what encode_source keeps."""
    from peftbench.data.encoding import encode_source

    config = DataConfig(
        data_dir=str(mini_dir), split="mini", max_eval_instances_per_task=20, num_pos_examples=3, num_neg_examples=2,
        add_explanation=True,
    )  # fmt: skip
    calls: list[int] = []

    def lengths(texts: list[str]) -> list[int]:
        calls.append(len(texts))
        return _char_lengths(texts)

    data = load_examples(config, lengths_fn=lengths, max_source_length=900)
    tasks = {name: load_task(mini_dir / "tasks" / f"{name}.json") for name in data.train_tasks + data.test_tasks}
    inputs = {inst["id"]: inst["input"] for task in tasks.values() for inst in task.instances}
    kept = set()
    for ex in data.train + data.test:
        one = encode_source(tasks[ex.task], inputs[ex.id], config, length_fn=len, max_source_length=900)
        assert ex.source == one
        kept.add(ex.source.count(" Example "))
    assert len(kept) >= 3  # the budget drops some demonstrations but not all: the test exercises the rounds
    assert max(calls) > 1 and len(calls) <= 5 * 2 * len(tasks)


def test_default_split_names_missing_tasks_in_one_line(mini_dir: Path) -> None:
    with pytest.raises(PeftbenchError) as excinfo:
        _load(mini_dir, split="default")
    split_file = mini_dir / "splits" / "default" / "train_tasks.txt"
    message = _assert_one_line_error(excinfo, split_file)
    assert "734 of 756" in message
    assert "task547_alt_translation_entk_en" in message
    assert "and 731 more" in message
    assert "excluded_tasks.txt" in message


# --------------------------------------------------------------------------------------------- tmp data


def _task_data(name: str, n: int, language: str = "English", category: str = "Misc.") -> dict[str, Any]:
    return {
        "Contributors": ["Test"],
        "Categories": [category],
        "Definition": [f"Definition of {name}"],
        "Input_language": [language],
        "Output_language": [language],
        "Instruction_language": ["English"],
        "Positive Examples": [{"input": "a", "output": "b", "explanation": "c"}],
        "Negative Examples": [],
        "Instances": [{"id": f"{name}-{i}", "input": f"input {i}", "output": [f"out {i}"]} for i in range(n)],
    }


def _make_data(
    root: Path,
    train: dict[str, dict[str, Any]],
    test: dict[str, dict[str, Any]],
    split: str = "custom",
) -> Path:
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    for name, data in {**train, **test}.items():
        (root / "tasks" / f"{name}.json").write_text(json.dumps(data, indent=4))
    split_dir = root / "splits" / split
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / "train_tasks.txt").write_text("".join(f"{n}\n" for n in train))
    (split_dir / "test_tasks.txt").write_text("".join(f"{n}\n" for n in test))
    return root


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return _make_data(
        tmp_path,
        train={"train_a": _task_data("train_a", 5), "train_b": _task_data("train_b", 5)},
        test={"test_a": _task_data("test_a", 5)},
    )


def test_tmp_dataset_loads(small: Path) -> None:
    data = _load(small, split="custom")
    assert data.train_tasks == ["train_a", "train_b"] and data.test_tasks == ["test_a"]
    assert [e.id for e in data.test] == [f"test_a-{i}" for i in range(5)]
    assert data.test[0].source == (
        "Definition: Definition of test_a.\n\nNow complete the following example -\nInput: input 0.\nOutput: "
    )
    assert data.test[0].target == "out 0" and data.test[0].references == ("out 0",)


def test_split_files_ignore_comments_and_blank_lines(small: Path) -> None:
    (small / "splits" / "custom" / "train_tasks.txt").write_text("# training tasks\n\ntrain_a  # first\n   \ntrain_b\n")
    assert _load(small, split="custom").train_tasks == ["train_a", "train_b"]


def test_missing_data_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(PeftbenchError) as excinfo:
        _load(missing)
    _assert_one_line_error(excinfo, missing)


def test_missing_split_directory_lists_available_splits(small: Path) -> None:
    with pytest.raises(PeftbenchError) as excinfo:
        _load(small, split="nope")
    message = _assert_one_line_error(excinfo, small / "splits" / "nope")
    assert "available splits: custom" in message


def test_missing_split_file(small: Path) -> None:
    test_file = small / "splits" / "custom" / "test_tasks.txt"
    test_file.unlink()
    with pytest.raises(PeftbenchError) as excinfo:
        _load(small, split="custom")
    message = _assert_one_line_error(excinfo, test_file)
    assert "available splits: custom" in message


def test_missing_task_file(small: Path) -> None:
    (small / "tasks" / "train_b.json").unlink()
    with pytest.raises(PeftbenchError) as excinfo:
        _load(small, split="custom")
    message = _assert_one_line_error(excinfo, small / "splits" / "custom" / "train_tasks.txt")
    assert "1 of 2" in message and "train_b" in message and "hint" in message


def test_malformed_json(small: Path) -> None:
    path = small / "tasks" / "train_b.json"
    path.write_text('{\n    "Definition": ["x"],\n    "Categories": [oops]\n}\n')
    with pytest.raises(PeftbenchError) as excinfo:
        _load(small, split="custom")
    message = _assert_one_line_error(excinfo, path)
    assert "malformed JSON at line 3, column 20" in message


def test_missing_required_keys(small: Path) -> None:
    path = small / "tasks" / "test_a.json"
    data = _task_data("test_a", 3)
    del data["Instances"], data["Categories"]
    path.write_text(json.dumps(data))
    with pytest.raises(PeftbenchError) as excinfo:
        _load(small, split="custom")
    message = _assert_one_line_error(excinfo, path)
    assert "'Categories'" in message and "'Instances'" in message
    assert "'Definition'" not in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("Definition", 3, "'Definition' must be a string or a list of strings"),
        ("Definition", [], "'Definition' must be a string or a non-empty list"),
        ("Instances", {"input": "x"}, "'Instances' must be a list"),
        ("Instances", [{"input": "x", "output": 3}], "'Instances'[0] needs 'output'"),
        ("Positive Examples", "none", "'Positive Examples' must be a list"),
    ],
)
def test_wrong_field_types(small: Path, key: str, value: Any, expected: str) -> None:
    path = small / "tasks" / "train_a.json"
    data = _task_data("train_a", 3)
    data[key] = value
    path.write_text(json.dumps(data))
    with pytest.raises(PeftbenchError) as excinfo:
        _load(small, split="custom")
    assert expected in _assert_one_line_error(excinfo, path)


def test_definition_as_plain_string_is_accepted(small: Path) -> None:
    data = _task_data("test_a", 2)
    data["Definition"] = "Plain string definition!"
    (small / "tasks" / "test_a.json").write_text(json.dumps(data))
    assert _load(small, split="custom").test[0].source.startswith("Definition: Plain string definition!\n\n")


def test_empty_inputs_and_references_are_kept_as_the_official_reference_file_has_them(
    small: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Evaluation keeps what natural-instructions' eval/leaderboard/create_reference_file.py keeps (the first 100
    instances, ``references = output`` as is); training skips only instances without a non-empty output."""
    train = _task_data("train_a", 6)
    train["Instances"][1]["output"] = []
    train["Instances"][3]["output"] = ["  "]
    train["Instances"][4]["input"] = ""  # kept for training, as Tk-Instruct keeps it
    train["Instances"][5]["output"] = ["", "only"]
    test = _task_data("test_a", 6)
    test["Instances"][0]["input"] = "   "
    test["Instances"][2]["output"] = ["", "kept"]
    test["Instances"][3]["output"] = [""]  # every output empty: still an instance of the official file
    test["Instances"][4]["output"] = []  # no reference at all: cannot be scored, skipped
    (small / "tasks" / "train_a.json").write_text(json.dumps(train))
    (small / "tasks" / "test_a.json").write_text(json.dumps(test))
    with caplog.at_level(logging.WARNING, logger="peftbench.data.superni"):
        data = _load(small, split="custom")
    assert data.stats["skipped_instances"] == 3
    kept = {e.id: e for e in data.train if e.task == "train_a"}
    assert sorted(kept) == ["train_a-0", "train_a-2", "train_a-4", "train_a-5"]
    assert "Input: .\nOutput: " in kept["train_a-4"].source
    assert kept["train_a-5"].target == "only" and kept["train_a-5"].references == ("", "only")
    assert [e.id for e in data.test] == ["test_a-0", "test_a-1", "test_a-2", "test_a-3", "test_a-5"]
    by_id = {e.id: e for e in data.test}
    assert by_id["test_a-0"].source.endswith("Input: .\nOutput: ")
    assert by_id["test_a-2"].references == ("", "kept") and by_id["test_a-2"].target == ""
    assert by_id["test_a-3"].references == ("",) and by_id["test_a-3"].target == ""
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("train_a.json" in w and "skipped 2 training" in w for w in warnings)
    assert any("test_a.json" in w and "skipped 1 evaluation" in w for w in warnings)


def test_custom_logger_receives_warnings(small: Path) -> None:
    data = _task_data("train_b", 2)
    data["Instances"][0]["output"] = []
    (small / "tasks" / "train_b.json").write_text(json.dumps(data))
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("test_superni.custom")
    log.addHandler(Collect())
    log.setLevel(logging.INFO)
    load_superni(DataConfig(data_dir=str(small), split="custom"), log=log)
    assert any(r.levelno == logging.WARNING and "skipped 1" in r.getMessage() for r in records)


def test_all_test_instances_empty_is_an_error(small: Path) -> None:
    data = _task_data("test_a", 2)
    for instance in data["Instances"]:
        instance["output"] = []
    (small / "tasks" / "test_a.json").write_text(json.dumps(data))
    with pytest.raises(PeftbenchError) as excinfo:
        _load(small, split="custom")
    assert "no test examples" in _assert_one_line_error(excinfo, small / "splits" / "custom" / "test_tasks.txt")


def test_excluded_tasks_are_honoured(small: Path) -> None:
    split = small / "splits" / "custom"
    split.joinpath("train_tasks.txt").write_text("train_a\ntrain_b\ngone_task\n")
    split.joinpath("excluded_tasks.txt").write_text("# broken upstream\ngone_task\ntrain_b\n")
    data = _load(small, split="custom")
    assert data.train_tasks == ["train_a"]
    assert {e.task for e in data.train} == {"train_a"}
    assert data.stats["excluded_tasks"] == 2


def test_non_english_task_is_excluded(small: Path) -> None:
    (small / "tasks" / "train_b.json").write_text(json.dumps(_task_data("train_b", 4, language="Spanish")))
    data = _load(small, split="custom")
    assert data.train_tasks == ["train_a"]
    assert data.stats["excluded_non_english_tasks"] == 1
    everything = _load(small, split="custom", english_only=False)
    assert everything.train_tasks == ["train_a", "train_b"]
    assert everything.stats["excluded_non_english_tasks"] == 0


def test_only_non_english_test_tasks_is_an_error(small: Path) -> None:
    (small / "tasks" / "test_a.json").write_text(json.dumps(_task_data("test_a", 4, language="Hindi")))
    with pytest.raises(PeftbenchError) as excinfo:
        _load(small, split="custom")
    assert "no test tasks" in _assert_one_line_error(excinfo, small / "splits" / "custom" / "test_tasks.txt")


def test_task_in_train_and_test_is_an_error(small: Path) -> None:
    split = small / "splits" / "custom"
    split.joinpath("test_tasks.txt").write_text("test_a\ntrain_a\n")
    with pytest.raises(PeftbenchError) as excinfo:
        _load(small, split="custom")
    assert "train_a" in _assert_one_line_error(excinfo, split / "test_tasks.txt")


def test_duplicate_task_in_split_file_is_an_error(small: Path) -> None:
    train_file = small / "splits" / "custom" / "train_tasks.txt"
    train_file.write_text("train_a\ntrain_b\ntrain_a\n")
    with pytest.raises(PeftbenchError) as excinfo:
        _load(small, split="custom")
    assert "lines 1 and 3" in _assert_one_line_error(excinfo, train_file)


def test_too_many_validation_tasks(small: Path) -> None:
    with pytest.raises(PeftbenchError) as excinfo:
        _load(small, split="custom", num_validation_tasks=2)
    message = _assert_one_line_error(excinfo, small / "splits" / "custom" / "train_tasks.txt")
    assert "num_validation_tasks=2" in message
    assert _load(small, split="custom", num_validation_tasks=1).stats["validation_tasks"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_train_instances_per_task": 0},
        {"max_eval_instances_per_task": -1},
        {"num_validation_tasks": -1},
        {"english_only": "yes"},
    ],
)
def test_config_validation(small: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(PeftbenchError) as excinfo:
        check_data(DataConfig(data_dir=str(small), split="custom", **kwargs))
    message = str(excinfo.value)
    assert "\n" not in message and next(iter(kwargs)) in message


def test_eval_uses_only_first_100_instances(small: Path) -> None:
    (small / "tasks" / "test_a.json").write_text(json.dumps(_task_data("test_a", 130)))
    uncapped = _load(small, split="custom", max_eval_instances_per_task=None)
    assert [e.id for e in uncapped.test] == [f"test_a-{i}" for i in range(100)]
    capped = _load(small, split="custom", max_eval_instances_per_task=3)
    assert [e.id for e in capped.test] == ["test_a-0", "test_a-1", "test_a-2"]


def test_training_examples_keep_every_non_empty_output_as_a_target(small: Path) -> None:
    """The target is drawn per epoch by the trainer (collate.with_epoch_targets), so loading keeps them all."""
    data = _task_data("train_a", 4)
    for instance in data["Instances"]:
        instance["output"] = ["red", "", "green", "blue"]
    (small / "tasks" / "train_a.json").write_text(json.dumps(data))
    train = [e for e in _load(small, split="custom").train if e.task == "train_a"]
    assert len(train) == 4
    for example in train:
        assert example.targets == ("red", "green", "blue") and example.target == "red"
        assert example.references == ("red", "", "green", "blue")
    assert all(e.targets == () for e in _load(small, split="custom").test)


# --------------------------------------------------------------------------------------------- seeds


def test_training_seed_does_not_change_the_data_but_data_seed_does(mini_dir: Path) -> None:
    """`seed` is the training seed; everything that selects data follows `data.seed` (issue 11, part 4)."""
    from peftbench.configure import config_from_dict
    from peftbench.recipe.rundir import config_hash
    from peftbench.recipe.setup import build_model, prepare_data

    data = {
        "data_dir": str(mini_dir), "split": "mini", "num_validation_tasks": 4, "num_train_tasks": 9,
        "max_train_instances_per_task": 3, "max_eval_instances_per_task": 2, "max_source_length": 48, "cache": False,
    }  # fmt: skip
    configs = {
        "base": config_from_dict({"model": {"name": "tiny-t5"}, "data": data, "seed": 1}),
        "seed": config_from_dict({"model": {"name": "tiny-t5"}, "data": data, "seed": 2}),
        "data.seed": config_from_dict({"model": {"name": "tiny-t5"}, "data": {**data, "seed": 7}, "seed": 1}),
    }
    assert configs["base"].data.seed == 42  # the study's fixed data selection
    model, tokenizer = build_model(configs["base"], apply_method=False)

    def selection(name: str) -> tuple:
        prepared = prepare_data(configs[name], tokenizer, model)
        roles = (prepared.train, prepared.validation, prepared.test)
        ids = tuple(tuple(f.id for f in role) for role in roles)
        return prepared.train_tasks, prepared.validation_tasks, prepared.test_tasks, ids

    base = selection("base")
    assert selection("seed") == base
    other = selection("data.seed")
    assert other[1] != base[1] and other[0] != base[0]  # other validation tasks, other training subset
    assert other[2] == base[2] and other[3][2] == base[3][2]  # the test set is the official one either way
    assert config_hash(configs["data.seed"]) != config_hash(configs["base"])


def test_the_loader_selects_and_does_not_encode(mini_dir: Path) -> None:
    """load_superni returns the selected instances as the task files have them; encoding them gives the examples."""
    from peftbench.data.encoding import encode_sources
    from peftbench.data.examples import encode_selection

    config = DataConfig(data_dir=str(mini_dir), split="mini", num_validation_tasks=2, num_pos_examples=1)
    selection = load_superni(config)
    first = selection.test[0]
    raw = load_task(first.path)
    by_id = {inst["id"]: inst for inst in raw.instances}
    assert all(by_id[inst["id"]] == inst for inst in first.instances)
    assert first.targets == [tuple(inst["output"]) for inst in first.instances]
    assert [i["id"] for i in first.instances] == [i["id"] for i in raw.instances[: len(first.instances)]]
    examples = encode_selection(selection, config)
    sources = encode_sources(first.task, [inst["input"] for inst in first.instances], config)
    assert [e.source for e in examples.test[: len(sources)]] == sources
    assert examples == load_examples(config)
