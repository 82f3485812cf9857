"""Exact Tk-Instruct prompt strings for real SuperNI tasks (superni-mini)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftbench.config import DataConfig, check_data
from peftbench.data.encoding import OUTPUT_CUE, encode_source
from peftbench.data.tasks import Task, load_task
from peftbench.errors import PeftbenchError

SUPERNI_MINI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "superni-mini"

# task1146_country_capital: definition and demonstrations lack final punctuation, so the add-period rule shows.
DEF_1146 = (
    "Definition: In this task, you are given a country name and you need to return the capital city of the "
    "given country.\n\n"
)
POS1_1146 = " Positive Example 1 -\nInput: United States.\n Output: Washington.\n\n"
POS2_1146 = " Positive Example 2 -\nInput: India.\n Output: New Delhi.\n\n"
NEG1_1146 = " Negative Example 1 -\nInput: France.\n Output: Rome.\n\n"
INPUT_1146 = "Now complete the following example -\nInput: Afghanistan.\nOutput: "


def _task(name: str) -> Task:
    path = SUPERNI_MINI / "tasks" / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"superni-mini data not available at {SUPERNI_MINI}")
    return load_task(path)


@pytest.fixture(scope="module")
def capital() -> Task:
    return _task("task1146_country_capital")


@pytest.fixture(scope="module")
def qasc() -> Task:
    return _task("task039_qasc_find_overlapping_words")


def test_output_cue_is_tk_instruct_cue() -> None:
    assert OUTPUT_CUE == "Output: "


def test_definition_only(capital: Task) -> None:
    source = encode_source(capital, "Afghanistan", DataConfig())
    assert source == (
        "Definition: In this task, you are given a country name and you need to return the capital city of "
        "the given country.\n\n"
        "Now complete the following example -\n"
        "Input: Afghanistan.\n"
        "Output: "
    )


def test_definition_and_two_positive_examples(capital: Task) -> None:
    source = encode_source(capital, "Afghanistan", DataConfig(num_pos_examples=2))
    assert source == (
        "Definition: In this task, you are given a country name and you need to return the capital city of "
        "the given country.\n\n"
        " Positive Example 1 -\n"
        "Input: United States.\n"
        " Output: Washington.\n"
        "\n"
        " Positive Example 2 -\n"
        "Input: India.\n"
        " Output: New Delhi.\n"
        "\n"
        "Now complete the following example -\n"
        "Input: Afghanistan.\n"
        "Output: "
    )


def test_definition_two_positive_examples_real_multiline_task(qasc: Task) -> None:
    instance = qasc.instances[0]
    assert instance["id"] == "task039-eb722ae4605f46f1afd5c61fb226948c"
    source = encode_source(qasc, instance["input"], DataConfig(num_pos_examples=2))
    assert source == (
        "Definition: Generate an overlapping word between the given two sentences. When you find the "
        'overlapping words, they don\'t have to match exactly, e.g., "survival" and "survive" are valid '
        'overlapping words. Little words like "the" or "of" don\'t count! You must generate significant '
        "words which are not the stop words.\n\n"
        " Positive Example 1 -\n"
        "Input: Sentence1: pesticides cause pollution. \n"
        "Sentence2: pollution can harm animals.\n"
        " Output: pollution.\n"
        "\n"
        " Positive Example 2 -\n"
        "Input: Sentence1: a solar panel converts sunlight into electricity. \n"
        "Sentence2: sunlight comes from the sun.\n"
        " Output: sunlight.\n"
        "\n"
        "Now complete the following example -\n"
        "Input: Sentence1: Some parasites kill their host, but most do not. \n"
        "Sentence2: All parasites are harmful to their host, but some are beneficial to humans.\n"
        "Output: "
    )


def test_positive_and_negative_examples(capital: Task) -> None:
    source = encode_source(capital, "Afghanistan", DataConfig(num_pos_examples=2, num_neg_examples=2))
    assert source == (
        DEF_1146
        + POS1_1146
        + POS2_1146
        + " Negative Example 1 -\nInput: France.\n Output: Rome.\n\n"
        + " Negative Example 2 -\nInput: Italy.\n Output: Beijing.\n\n"
        + INPUT_1146
    )


def test_explanations(capital: Task, qasc: Task) -> None:
    config = DataConfig(num_pos_examples=1, num_neg_examples=1, add_explanation=True)
    assert encode_source(capital, "Afghanistan", config) == (
        DEF_1146 + " Positive Example 1 -\n"
        "Input: United States.\n"
        " Output: Washington.\n"
        " Explanation: Washington is the capital city of United States.\n"
        "\n"
        " Negative Example 1 -\n"
        "Input: France.\n"
        " Output: Rome.\n"
        " Explanation: Rome is not the capital city of France. Paris is the capital city of France.\n"
        "\n" + INPUT_1146
    )
    no_definition = DataConfig(add_task_definition=False, num_pos_examples=1, add_explanation=True)
    assert encode_source(qasc, "Sentence1: x y. \nSentence2: y z.", no_definition) == (
        " Positive Example 1 -\n"
        "Input: Sentence1: pesticides cause pollution. \n"
        "Sentence2: pollution can harm animals.\n"
        " Output: pollution.\n"
        ' Explanation: The word "pollution" is common to Sentence1 and Sentence2. So, it\'s a good answer.\n'
        "\n"
        "Now complete the following example -\n"
        "Input: Sentence1: x y. \n"
        "Sentence2: y z.\n"
        "Output: "
    )


def test_explanation_missing_key_is_skipped(capital: Task) -> None:
    import dataclasses

    bare = dataclasses.replace(capital, positive_examples=[{"input": "Peru", "output": "Lima"}])
    config = DataConfig(add_task_definition=False, num_pos_examples=1, add_explanation=True)
    assert encode_source(bare, "Chile", config) == (
        " Positive Example 1 -\nInput: Peru.\n Output: Lima.\n\n"
        "Now complete the following example -\nInput: Chile.\nOutput: "
    )


def test_add_task_name(capital: Task) -> None:
    source = encode_source(capital, "Afghanistan", DataConfig(add_task_name=True))
    assert source == "task1146_country_capital. " + DEF_1146 + INPUT_1146


def test_no_definition(capital: Task) -> None:
    assert encode_source(capital, "Afghanistan", DataConfig(add_task_definition=False)) == (
        "Now complete the following example -\nInput: Afghanistan.\nOutput: "
    )
    pos2 = DataConfig(add_task_definition=False, num_pos_examples=2)
    assert encode_source(capital, "Afghanistan", pos2) == POS1_1146 + POS2_1146 + INPUT_1146


def test_punctuation_rule_and_strip(capital: Task) -> None:
    config = DataConfig(add_task_definition=False)
    # Existing ASCII punctuation is kept as is, whitespace is stripped, a period is added otherwise.
    assert encode_source(capital, "  Is it Chad?  ", config).endswith("Input: Is it Chad?\nOutput: ")
    assert encode_source(capital, "(Chad)", config).endswith("Input: (Chad)\nOutput: ")
    assert encode_source(capital, "Chad\n", config).endswith("Input: Chad.\nOutput: ")
    # string.punctuation is ASCII only: a non-ASCII full stop still gets a period.
    assert encode_source(capital, "Chad。", config).endswith("Input: Chad。.\nOutput: ")


def test_requesting_more_examples_than_exist(capital: Task) -> None:
    source = encode_source(capital, "Afghanistan", DataConfig(num_pos_examples=5, num_neg_examples=1))
    assert source == DEF_1146 + POS1_1146 + POS2_1146 + NEG1_1146 + INPUT_1146


def test_length_fn_drops_examples_that_do_not_fit(capital: Task) -> None:
    config = DataConfig(num_pos_examples=2, num_neg_examples=1)
    assert len(DEF_1146 + POS1_1146 + INPUT_1146) == 249
    assert len(DEF_1146 + POS1_1146 + POS2_1146 + INPUT_1146) == 306
    assert len(DEF_1146 + POS1_1146 + NEG1_1146 + INPUT_1146) == 302
    # Everything fits.
    full = DEF_1146 + POS1_1146 + POS2_1146 + NEG1_1146 + INPUT_1146
    assert encode_source(capital, "Afghanistan", config, length_fn=len, max_source_length=1000) == full
    # Positive example 2 overflows (306 > 302) and ends the positives; negatives are tried on their own
    # and negative example 1 fits exactly (302 <= 302), as in Tk-Instruct.
    assert (
        encode_source(capital, "Afghanistan", config, length_fn=len, max_source_length=302)
        == DEF_1146 + POS1_1146 + NEG1_1146 + INPUT_1146
    )
    # Tk-Instruct measures kept examples joined with " ": with both positives kept, the negative is
    # measured at 360 characters although the prompt would be 359.
    assert len(full) == 359
    assert (
        encode_source(capital, "Afghanistan", config, length_fn=len, max_source_length=359)
        == DEF_1146 + POS1_1146 + POS2_1146 + INPUT_1146
    )
    # Nothing fits: no examples, but the definition, the input and the final cue are never cut.
    tiny = encode_source(capital, "Afghanistan", config, length_fn=len, max_source_length=10)
    assert tiny == DEF_1146 + INPUT_1146
    assert tiny.endswith(OUTPUT_CUE)


def test_length_fn_ignored_without_budget(capital: Task) -> None:
    config = DataConfig(num_pos_examples=2)
    calls: list[str] = []

    def counting_len(text: str) -> int:
        calls.append(text)
        return 10**9

    assert encode_source(capital, "Afghanistan", config, length_fn=counting_len) == (
        DEF_1146 + POS1_1146 + POS2_1146 + INPUT_1146
    )
    assert calls == []
    assert encode_source(capital, "Afghanistan", config, max_source_length=1) == (
        DEF_1146 + POS1_1146 + POS2_1146 + INPUT_1146
    )


def test_length_fn_does_not_measure_task_name(capital: Task) -> None:
    config = DataConfig(num_pos_examples=1, add_task_name=True)
    source = encode_source(capital, "Afghanistan", config, length_fn=len, max_source_length=249)
    # Tk-Instruct's check leaves the task name out, so the example is kept although the prompt is longer.
    assert source == "task1146_country_capital. " + DEF_1146 + POS1_1146 + INPUT_1146
    assert len(source) > 249


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_pos_examples": -1}, "num_pos_examples"),
        ({"num_neg_examples": 1.5}, "num_neg_examples"),
        ({"num_pos_examples": True}, "num_pos_examples"),
        ({"add_explanation": "yes"}, "add_explanation"),
    ],
)
def test_encoding_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(PeftbenchError, match=field) as excinfo:
        check_data(DataConfig(**kwargs))
    assert "\n" not in str(excinfo.value)


def test_decoder_only_demonstrations_fit_the_capped_prompt_limit(superni_mini: Path, tmp_path: Path) -> None:
    """A decoder-only prompt limit is capped at positions - max_target_length; demonstrations must be fitted to
    that cap (as Tk-Instruct fits them to its limit), or they push the instance itself out of the prompt."""
    from peftbench.configure import config_from_dict
    from peftbench.recipe.setup import build_model, prepare_data

    cfg = config_from_dict({
        "model": {"name": "tiny-gpt2"}, "method": {"name": "lora"},
        "data": {"data_dir": str(superni_mini), "split": "mini", "max_eval_instances_per_task": 3,
                 "max_train_instances_per_task": 1, "num_pos_examples": 2, "max_source_length": 1024,
                 "max_target_length": 1024 - 700, "cache": False},
        "output_dir": str(tmp_path),
    })  # fmt: skip
    model, tokenizer = build_model(cfg, apply_method=False)
    prompts = [tokenizer.decode(f.prompt_ids) for f in prepare_data(cfg, tokenizer, model).test]
    with_demos = [p for p in prompts if "Positive Example 1" in p]
    assert with_demos, "no prompt kept a demonstration: the check below would be empty"
    assert all("Now complete the following example" in p for p in with_demos)
