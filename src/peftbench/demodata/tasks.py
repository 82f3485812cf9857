"""The demo's task table: which skill each SuperNI-format task uses, its definition, category and explanations,
and the splits (``demo``: instruction tuning and its unseen test tasks; ``pretrain``: the base model's)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from peftbench.demodata.skills import (
    make_add_three,
    make_add_two,
    make_animal_mention,
    make_colour_mention,
    make_copy,
    make_count_letters,
    make_count_words,
    make_fill_missing,
    make_first_word,
    make_fruit_mention,
    make_join_words,
    make_larger,
    make_last_letter,
    make_last_word,
    make_lowercase,
    make_opinion,
    make_remove_digits,
    make_repeat_twice,
    make_reverse_words,
    make_review,
    make_second_word,
    make_spell_out,
    make_uppercase,
    wrong_copy,
    wrong_count,
    wrong_fill_missing,
    wrong_first_word,
    wrong_join_words,
    wrong_larger,
    wrong_last_letter,
    wrong_last_word,
    wrong_lowercase,
    wrong_remove_digits,
    wrong_repeat_twice,
    wrong_reverse_words,
    wrong_second_word,
    wrong_sentiment,
    wrong_spell_out,
    wrong_sum,
    wrong_uppercase,
    wrong_yes_no,
)
from peftbench.demodata.words import Instance

DEMO_SPLIT = "demo"
"""Name of the instruction-tuning split (``splits/demo``)."""

PRETRAIN_SPLIT = "pretrain"
"""Name of the base-model pre-training split (``splits/pretrain``)."""

# ----------------------------------------------------------------------------------------------------
# Task table.


@dataclass(frozen=True)
class TaskSpec:
    """One procedural task: how to make instances, a plausible wrong answer, and the SuperNI metadata."""

    number: int
    slug: str
    category: str
    definition: str
    make: Callable[[random.Random], Instance]
    wrong: Callable[[random.Random, str, list[str]], str]
    right_explanation: str  # formatted with {input} and {output}
    wrong_explanation: str  # formatted with {input}, {output} (the wrong one) and {correct}
    negatives: int = 1
    domain: str = "Synthetic"

    @property
    def name(self) -> str:
        return f"task{self.number}_{self.slug}"

    @property
    def prefix(self) -> str:
        return f"task{self.number}"


DEMO_TRAIN_SPECS: tuple[TaskSpec, ...] = (
    TaskSpec(
        9001, "demo_copy_text", "Text Copying",
        "Copy the given text exactly as it is written.",
        make_copy, wrong_copy,
        "The text is copied without any change.",
        "A word is missing; the exact copy is \"{correct}\".",
    ),
    TaskSpec(
        9002, "demo_reverse_words", "Text Transformation",
        "Reverse the order of the words in the given text. Keep each word unchanged.",
        make_reverse_words, wrong_reverse_words,
        "Reading the words from last to first gives \"{output}\".",
        "The words are still in the original order; reversed they are \"{correct}\".",
    ),
    TaskSpec(
        9003, "demo_first_word", "Word Extraction",
        "Write the first word of the given text.",
        make_first_word, wrong_first_word,
        "The text starts with the word \"{output}\".",
        "\"{output}\" is the second word; the first word is \"{correct}\".",
    ),
    TaskSpec(
        9004, "demo_count_words", "Counting",
        "Count the words in the given text and answer with the number.",
        make_count_words, wrong_count,
        "The text has {output} words.",
        "The count is off; the correct count is {correct}.",
        negatives=2,
    ),
    TaskSpec(
        9005, "demo_add_two_numbers", "Arithmetic",
        "Add the two numbers and write the result as a number.",
        make_add_two, wrong_sum,
        "{input} equals {output}.",
        "{input} is not {output}; it equals {correct}.",
        negatives=2,
    ),
    TaskSpec(
        9006, "demo_animal_mention", "Text Categorization",
        "Does the sentence mention an animal? Answer \"yes\" or \"no\".",
        make_animal_mention, wrong_yes_no,
        "Checking every word for an animal gives the answer \"{output}\".",
        "The answer is \"{correct}\", not \"{output}\", after checking every word for an animal.",
    ),
    TaskSpec(
        9007, "demo_review_sentiment", "Sentiment Analysis",
        "Is the review positive or negative? Answer \"positive\" or \"negative\".",
        make_review, wrong_sentiment,
        "The review's key word shows it is {output}.",
        "The review's key word shows it is {correct}, not {output}.",
    ),
    TaskSpec(
        9008, "demo_uppercase", "Text Transformation",
        "Rewrite the given text in uppercase letters.",
        make_uppercase, wrong_uppercase,
        "Every letter is made uppercase.",
        "Only the first letter is uppercase; every letter should be: \"{correct}\".",
    ),
    TaskSpec(
        9009, "demo_count_letters", "Counting",
        "Count the letters in the given word and answer with the number.",
        make_count_letters, wrong_count,
        "The word \"{input}\" has {output} letters.",
        "The word \"{input}\" has {correct} letters, not {output}.",
    ),
    TaskSpec(
        9010, "demo_larger_number", "Arithmetic",
        "Two numbers are given. Write the larger of the two.",
        make_larger, wrong_larger,
        "{output} is the larger number.",
        "{output} is the smaller number; the larger is {correct}.",
    ),
    TaskSpec(
        9011, "demo_fruit_mention", "Text Categorization",
        "Does the sentence mention a fruit? Answer \"yes\" or \"no\".",
        make_fruit_mention, wrong_yes_no,
        "Checking every word for a fruit gives the answer \"{output}\".",
        "The answer is \"{correct}\", not \"{output}\", after checking every word for a fruit.",
    ),
    TaskSpec(
        9012, "demo_last_letter", "Word Extraction",
        "Write the last letter of the given word.",
        make_last_letter, wrong_last_letter,
        "The word \"{input}\" ends with \"{output}\".",
        "\"{output}\" is the first letter; the last letter is \"{correct}\".",
    ),
)  # fmt: skip

DEMO_TEST_SPECS: tuple[TaskSpec, ...] = (
    TaskSpec(
        9101, "demo_repeat_input", "Text Copying",
        "Copy the input text exactly as it is given, word for word.",
        make_copy, wrong_copy,
        "The input is repeated unchanged.",
        "A word was dropped; repeated exactly it is \"{correct}\".",
    ),
    TaskSpec(
        9102, "demo_last_word", "Word Extraction",
        "Write the last word of the given text.",
        make_last_word, wrong_last_word,
        "The text ends with \"{output}\".",
        "\"{output}\" is where the text begins; it ends with \"{correct}\".",
    ),
    TaskSpec(
        9103, "demo_add_three_numbers", "Arithmetic",
        "Add the three numbers and write the result as a number.",
        make_add_three, wrong_sum,
        "The three numbers sum to {output}.",
        "{output} leaves out the last number; the total is {correct}.",
    ),
    TaskSpec(
        9104, "demo_colour_mention", "Text Categorization",
        "Does the sentence mention a colour? Answer \"yes\" or \"no\".",
        make_colour_mention, wrong_yes_no,
        "Looking for a colour word gives \"{output}\".",
        "Looking for a colour word gives \"{correct}\", not \"{output}\".",
    ),
    TaskSpec(
        9105, "demo_lowercase", "Text Transformation",
        "Rewrite the given text in lowercase letters.",
        make_lowercase, wrong_lowercase,
        "All capital letters become small letters.",
        "The capitals were not changed; in lowercase it is \"{correct}\".",
    ),
    TaskSpec(
        9106, "demo_opinion_polarity", "Sentiment Analysis",
        "Is the opinion positive or negative? Answer \"positive\" or \"negative\".",
        make_opinion, wrong_sentiment,
        "The opinion word is {output}.",
        "The opinion word is {correct}, so \"{output}\" is wrong.",
    ),
)  # fmt: skip

PRETRAIN_TRAIN_SPECS: tuple[TaskSpec, ...] = (
    TaskSpec(
        9201, "pretrain_repeat_second_word", "Word Extraction",
        "Repeat the second word of the input.",
        make_second_word, wrong_second_word,
        "The second word is \"{output}\".",
        "\"{output}\" is the first word; the second is \"{correct}\".",
    ),
    TaskSpec(
        9202, "pretrain_fill_missing_letter", "Text Completion",
        "One letter of the word is replaced by an underscore. Write the complete word.",
        make_fill_missing, wrong_fill_missing,
        "Filling the gap gives the word \"{output}\".",
        "\"{output}\" is not a word; the gap gives \"{correct}\".",
    ),
    TaskSpec(
        9203, "pretrain_join_words", "Text Transformation",
        "Join the two words into one word by removing the space.",
        make_join_words, wrong_join_words,
        "Without the space the words read \"{output}\".",
        "The words were joined in the wrong order; it should be \"{correct}\".",
    ),
    TaskSpec(
        9204, "pretrain_remove_digits", "Text Cleaning",
        "Remove every digit from the text and write what remains.",
        make_remove_digits, wrong_remove_digits,
        "With the digits removed the text is \"{output}\".",
        "Some digits are still there; the clean text is \"{correct}\".",
    ),
    TaskSpec(
        9205, "pretrain_spell_out", "Text Transformation",
        "Spell the word by writing its letters separated by spaces.",
        make_spell_out, wrong_spell_out,
        "The letters of \"{input}\" are written with a space between each two.",
        "A letter is missing; the spelling is \"{correct}\".",
    ),
)  # fmt: skip

PRETRAIN_TEST_SPECS: tuple[TaskSpec, ...] = (
    TaskSpec(
        9206, "pretrain_repeat_word_twice", "Text Copying",
        "Write the given word two times, separated by a space.",
        make_repeat_twice, wrong_repeat_twice,
        "The word is written twice.",
        "The word is written only once; twice it is \"{correct}\".",
    ),
)  # fmt: skip

DEMO_TRAIN_TASKS: tuple[str, ...] = tuple(spec.name for spec in DEMO_TRAIN_SPECS)
DEMO_TEST_TASKS: tuple[str, ...] = tuple(spec.name for spec in DEMO_TEST_SPECS)
PRETRAIN_TRAIN_TASKS: tuple[str, ...] = tuple(spec.name for spec in PRETRAIN_TRAIN_SPECS)
PRETRAIN_TEST_TASKS: tuple[str, ...] = tuple(spec.name for spec in PRETRAIN_TEST_SPECS)
