"""Deterministic SuperNI-format data from simple procedural tasks, for ``peftbench demo``.

No pretrained model can be downloaded for the demo, so it trains tiny randomly initialised byte-level models
on CPU. This module writes the data it needs in the layout of the natural-instructions repository::

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
characters) because the models see one token per byte. Every random choice is drawn from a
:class:`random.Random` seeded from the user's seed and the task name, so the same parameters give
byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.errors import PeftbenchError

DEMO_SPLIT = "demo"
"""Name of the instruction-tuning split (``splits/demo``)."""

PRETRAIN_SPLIT = "pretrain"
"""Name of the base-model pre-training split (``splits/pretrain``)."""

GENERATOR_VERSION = 2
"""Bumped whenever the generated data changes for the same parameters; part of the completeness stamp."""

GENERATOR_NAME = "peftbench.data.demo_tasks"
STAMP_FILE = "generator.json"
MAX_INPUT_CHARS = 60
MAX_OUTPUT_CHARS = 20
MAX_DEFINITION_CHARS = 200

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
# Word lists. The pools used as "targets" (animals, colours, fruits, sentiment words) are disjoint from the
# neutral pools (nouns, adjectives), so keyword-based labels are exact.

ANIMALS: tuple[str, ...] = (
    "cat", "dog", "cow", "fox", "owl", "pig", "hen", "goat", "lion", "bear",
    "wolf", "deer", "horse", "mouse", "sheep", "tiger", "zebra", "rabbit", "camel", "snake",
)  # fmt: skip
COLOURS: tuple[str, ...] = (
    "red", "blue", "green", "pink", "grey", "black", "white", "brown", "yellow", "purple",
)  # fmt: skip
FRUITS: tuple[str, ...] = (
    "apple", "pear", "mango", "grape", "melon", "banana", "kiwi", "fig", "guava", "papaya",
)  # fmt: skip
NOUNS: tuple[str, ...] = (
    "book", "car", "door", "lamp", "road", "cup", "hat", "box", "bed", "pen",
    "desk", "ship", "tree", "rock", "coin", "bell", "sand", "bread", "chair", "table",
    "house", "train", "river", "stone", "glass", "cloud", "paper", "clock", "shoe", "key",
    "map", "bag", "ring", "wall", "hill", "boat", "kite", "drum", "sock", "spoon",
)  # fmt: skip
ADJECTIVES: tuple[str, ...] = (
    "big", "small", "old", "new", "tall", "short", "warm", "cold", "soft", "loud",
    "quiet", "round", "flat", "long", "wet", "dry", "fast", "slow", "heavy", "clean",
)  # fmt: skip
VERBS: tuple[str, ...] = (
    "saw", "took", "found", "moved", "held", "lost", "made", "drew",
    "kept", "fixed", "sold", "used", "got", "had", "washed", "carried",
)  # fmt: skip
SUBJECTS: tuple[str, ...] = ("I", "We", "You", "They", "Tom", "Ana", "Sam", "Mia", "Max", "Eva", "Leo", "Zoe")
PLACES: tuple[str, ...] = ("here", "near me", "at home", "outside", "by the door", "on the hill")
POSITIVE_WORDS: tuple[str, ...] = (
    "good", "great", "lovely", "superb", "nice", "fun", "perfect", "amazing", "wonderful", "brilliant",
)  # fmt: skip
NEGATIVE_WORDS: tuple[str, ...] = (
    "bad", "awful", "poor", "boring", "terrible", "dull", "horrible", "weak", "dreadful", "nasty",
)  # fmt: skip
REVIEW_ITEMS: tuple[str, ...] = (
    "film", "meal", "book", "show", "hotel", "game", "song", "cafe", "phone", "trip",
)  # fmt: skip
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    "twenty",
)  # fmt: skip

_PLAIN_WORDS: tuple[str, ...] = NOUNS + ADJECTIVES + VERBS + ANIMALS + COLOURS + FRUITS
_ALL_REAL_WORDS: tuple[str, ...] = tuple(sorted(set(_PLAIN_WORDS + REVIEW_ITEMS)))
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_DIGITS = "0123456789"

# ----------------------------------------------------------------------------------------------------
# Small helpers. Each takes the ``random.Random`` to draw from; none touches the global random state.

Instance = tuple[str, list[str]]


def _number_refs(n: int) -> list[str]:
    """Acceptable references for a number: the digits, plus the English word up to twenty."""
    return [str(n), NUMBER_WORDS[n]] if 0 <= n < len(NUMBER_WORDS) else [str(n)]


def _pseudo_word(rng: random.Random, min_len: int = 3, max_len: int = 6) -> str:
    """A pronounceable made-up word (consonant-vowel alternation), e.g. ``"kobat"``."""
    length = rng.randint(min_len, max_len)
    return "".join(rng.choice(_CONSONANTS if i % 2 == 0 else _VOWELS) for i in range(length))


def _any_word(rng: random.Random) -> str:
    """A real word half of the time, otherwise a made-up one (so unique inputs never run out)."""
    return rng.choice(_ALL_REAL_WORDS) if rng.random() < 0.5 else _pseudo_word(rng)


def _distinct_words(
    rng: random.Random, pick: Callable[[random.Random], str], k_min: int, k_max: int, max_chars: int
) -> list[str]:
    """Between ``k_min`` and ``k_max`` distinct words from ``pick`` whose space-joined length fits."""
    while True:
        k = rng.randint(k_min, k_max)
        words: list[str] = []
        while len(words) < k:
            word = pick(rng)
            if word not in words:
                words.append(word)
        if len(" ".join(words)) <= max_chars:
            return words


def _plain(rng: random.Random) -> str:
    return rng.choice(_PLAIN_WORDS)


def _article(word: str) -> str:
    return "an" if word[0] in _VOWELS else "a"


def _flip(answer: str, first: str, second: str) -> str:
    return second if answer == first else first


def _mention_sentence(
    rng: random.Random,
    has_target: bool,
    targets: Sequence[str],
    target_slot: str,
    nouns: Sequence[str],
    adjectives: Sequence[str],
) -> str:
    """A short sentence that names a word from ``targets`` (in the noun or adjective slot) iff ``has_target``.

    ``nouns`` and ``adjectives`` must not contain any target word.
    """
    noun, noun2 = rng.sample(list(nouns), 2)
    adjective = rng.choice(adjectives)
    if has_target and target_slot == "noun":
        noun = rng.choice(targets)
    elif has_target:
        adjective = rng.choice(targets)
    subject, verb, place = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(PLACES)
    template = rng.randrange(3)
    if template == 0:
        return f"{subject} {verb} the {adjective} {noun}."
    if template == 1:
        return f"The {adjective} {noun} is {place}."
    if rng.random() < 0.5:
        noun, noun2 = noun2, noun  # the target noun, if any, moves to the second slot
    return f"{subject} {verb} {_article(adjective)} {adjective} {noun} and {_article(noun2)} {noun2}."


# ----------------------------------------------------------------------------------------------------
# Instance makers: ``make(rng) -> (input, acceptable outputs)`` and ``wrong(rng, input, outputs) -> str``.


def _make_copy(rng: random.Random) -> Instance:
    words = _distinct_words(rng, _plain, 2, 4, MAX_OUTPUT_CHARS)
    if rng.random() < 0.3:
        words[0] = words[0].capitalize()
    text = " ".join(words)
    return text, [text]


def _wrong_copy(rng: random.Random, text: str, outputs: list[str]) -> str:
    words = text.split()
    del words[rng.randrange(len(words))]
    return " ".join(words)


def _make_reverse_words(rng: random.Random) -> Instance:
    words = _distinct_words(rng, _plain, 2, 4, MAX_OUTPUT_CHARS)
    return " ".join(words), [" ".join(reversed(words))]


def _wrong_reverse_words(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text  # the words left in their original order


def _make_first_word(rng: random.Random) -> Instance:
    words = _distinct_words(rng, _plain, 3, 6, MAX_INPUT_CHARS)
    return " ".join(words), [words[0]]


def _make_last_word(rng: random.Random) -> Instance:
    words = _distinct_words(rng, _plain, 3, 6, MAX_INPUT_CHARS)
    return " ".join(words), [words[-1]]


def _wrong_first_word(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text.split()[1]


def _wrong_last_word(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text.split()[0]


def _make_count_words(rng: random.Random) -> Instance:
    words = [_plain(rng) for _ in range(rng.randint(1, 8))]
    while len(" ".join(words)) > MAX_INPUT_CHARS:
        words.pop()
    return " ".join(words), _number_refs(len(words))


def _wrong_count(rng: random.Random, text: str, outputs: list[str]) -> str:
    n = int(outputs[0])
    return str(n + 1 if n <= 1 or rng.random() < 0.5 else n - 1)


def _make_count_letters(rng: random.Random) -> Instance:
    word = rng.choice(_ALL_REAL_WORDS) if rng.random() < 0.5 else _pseudo_word(rng, 3, 8)
    return word, _number_refs(len(word))


def _make_last_letter(rng: random.Random) -> Instance:
    while True:
        word = _any_word(rng)
        if word[0] != word[-1]:
            return word, [word[-1]]


def _wrong_last_letter(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text[0]


def _make_add_two(rng: random.Random) -> Instance:
    a, b = rng.randint(0, 50), rng.randint(0, 50)
    return f"{a} + {b}", _number_refs(a + b)


def _make_add_three(rng: random.Random) -> Instance:
    a, b, c = rng.randint(0, 30), rng.randint(0, 30), rng.randint(1, 30)
    return f"{a} + {b} + {c}", _number_refs(a + b + c)


def _wrong_sum(rng: random.Random, text: str, outputs: list[str]) -> str:
    terms = [int(t) for t in text.split(" + ")]
    if len(terms) == 3:
        return str(terms[0] + terms[1])  # forgot the last number
    return str(sum(terms) + rng.choice((-1, 1, 10)))


def _make_larger(rng: random.Random) -> Instance:
    a, b = rng.sample(range(100), 2)
    return f"{a} or {b}", [str(max(a, b))]


def _wrong_larger(rng: random.Random, text: str, outputs: list[str]) -> str:
    a, b = (int(t) for t in text.split(" or "))
    return str(min(a, b))


def _yes_no(has: bool) -> list[str]:
    return ["yes" if has else "no"]


def _make_animal_mention(rng: random.Random) -> Instance:
    has = rng.random() < 0.5
    sentence = _mention_sentence(rng, has, ANIMALS, "noun", NOUNS + FRUITS, ADJECTIVES + COLOURS)
    return sentence, _yes_no(has)


def _make_fruit_mention(rng: random.Random) -> Instance:
    has = rng.random() < 0.5
    sentence = _mention_sentence(rng, has, FRUITS, "noun", NOUNS + ANIMALS, ADJECTIVES + COLOURS)
    return sentence, _yes_no(has)


def _make_colour_mention(rng: random.Random) -> Instance:
    has = rng.random() < 0.5
    sentence = _mention_sentence(rng, has, COLOURS, "adjective", NOUNS + ANIMALS + FRUITS, ADJECTIVES)
    return sentence, _yes_no(has)


def _wrong_yes_no(rng: random.Random, text: str, outputs: list[str]) -> str:
    return _flip(outputs[0], "yes", "no")


def _make_review(rng: random.Random) -> Instance:
    positive = rng.random() < 0.5
    word = rng.choice(POSITIVE_WORDS if positive else NEGATIVE_WORDS)
    item = rng.choice(REVIEW_ITEMS)
    template = rng.randrange(3)
    if template == 0:
        text = f"The {item} was {rng.choice(('', 'very ', 'so '))}{word}."
    elif template == 1:
        text = f"What {_article(word)} {word} {item}!"
    else:
        text = f"A {word} {item}, I would say."
    return text, ["positive" if positive else "negative"]


def _make_opinion(rng: random.Random) -> Instance:
    positive = rng.random() < 0.5
    word = rng.choice(POSITIVE_WORDS if positive else NEGATIVE_WORDS)
    item = rng.choice(REVIEW_ITEMS)
    template = rng.randrange(3)
    if template == 0:
        text = f"I found the {item} {word}."
    elif template == 1:
        text = f"My {item} today was really {word}."
    else:
        text = f"Honestly, the {item} felt {word} to me."
    return text, ["positive" if positive else "negative"]


def _wrong_sentiment(rng: random.Random, text: str, outputs: list[str]) -> str:
    return _flip(outputs[0], "positive", "negative")


def _make_uppercase(rng: random.Random) -> Instance:
    text = " ".join(_distinct_words(rng, _plain, 1, 3, MAX_OUTPUT_CHARS))
    return text, [text.upper()]


def _wrong_uppercase(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text.capitalize()  # only the first letter changed


def _make_lowercase(rng: random.Random) -> Instance:
    words = _distinct_words(rng, _plain, 1, 3, MAX_OUTPUT_CHARS)
    mixed = [w.upper() if rng.random() < 0.6 else w.capitalize() for w in words]
    text = " ".join(mixed)
    return text, [text.lower()]


def _wrong_lowercase(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text  # left unchanged


# Pre-training tasks: generic byte-level skills (copy a span, denoise, compose), disjoint from the demo tasks.


def _make_second_word(rng: random.Random) -> Instance:
    words = _distinct_words(rng, _any_word, 3, 5, MAX_INPUT_CHARS)
    return " ".join(words), [words[1]]


def _wrong_second_word(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text.split()[0]


def _make_fill_missing(rng: random.Random) -> Instance:
    while True:
        word = rng.choice(_ALL_REAL_WORDS)
        if len(word) >= 3:
            break
    position = rng.randrange(len(word))
    pattern = word[:position] + "_" + word[position + 1 :]
    others = sorted(w for w in _ALL_REAL_WORDS if w != word and _fits_blank(w, pattern))
    return pattern, [word, *others]


def _fits_blank(word: str, pattern: str) -> bool:
    return len(word) == len(pattern) and all(p in ("_", c) for c, p in zip(word, pattern, strict=True))


def _wrong_fill_missing(rng: random.Random, text: str, outputs: list[str]) -> str:
    while True:
        candidate = text.replace("_", rng.choice(_VOWELS + _CONSONANTS))
        if candidate not in outputs:
            return candidate


def _make_join_words(rng: random.Random) -> Instance:
    words = _distinct_words(rng, _any_word, 2, 2, MAX_OUTPUT_CHARS + 1)
    return " ".join(words), ["".join(words)]


def _wrong_join_words(rng: random.Random, text: str, outputs: list[str]) -> str:
    first, second = text.split()
    return second + first


def _make_remove_digits(rng: random.Random) -> Instance:
    words = _distinct_words(rng, _any_word, 1, 3, MAX_OUTPUT_CHARS)
    noisy = []
    for word in words:
        letters = list(word)
        for _ in range(rng.randint(1, 2)):
            letters.insert(rng.randint(0, len(letters)), rng.choice(_DIGITS))
        noisy.append("".join(letters))
    return " ".join(noisy), [" ".join(words)]


def _wrong_remove_digits(rng: random.Random, text: str, outputs: list[str]) -> str:
    position = next(i for i, c in enumerate(text) if c.isdigit())
    return text[:position] + text[position + 1 :]  # only the first digit removed


def _make_spell_out(rng: random.Random) -> Instance:
    word = rng.choice(_ALL_REAL_WORDS) if rng.random() < 0.5 else _pseudo_word(rng, 3, 7)
    return word, [" ".join(word)]


def _wrong_spell_out(rng: random.Random, text: str, outputs: list[str]) -> str:
    return " ".join(text[:-1])  # the last letter forgotten


def _make_repeat_twice(rng: random.Random) -> Instance:
    word = _any_word(rng)
    return word, [f"{word} {word}"]


def _wrong_repeat_twice(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text


# ----------------------------------------------------------------------------------------------------
# Task table.


@dataclass(frozen=True)
class _TaskSpec:
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


_DEMO_TRAIN_SPECS: tuple[_TaskSpec, ...] = (
    _TaskSpec(
        9001, "demo_copy_text", "Text Copying",
        "Copy the given text exactly as it is written.",
        _make_copy, _wrong_copy,
        "The text is copied without any change.",
        "A word is missing; the exact copy is \"{correct}\".",
    ),
    _TaskSpec(
        9002, "demo_reverse_words", "Text Transformation",
        "Reverse the order of the words in the given text. Keep each word unchanged.",
        _make_reverse_words, _wrong_reverse_words,
        "Reading the words from last to first gives \"{output}\".",
        "The words are still in the original order; reversed they are \"{correct}\".",
    ),
    _TaskSpec(
        9003, "demo_first_word", "Word Extraction",
        "Write the first word of the given text.",
        _make_first_word, _wrong_first_word,
        "The text starts with the word \"{output}\".",
        "\"{output}\" is the second word; the first word is \"{correct}\".",
    ),
    _TaskSpec(
        9004, "demo_count_words", "Counting",
        "Count the words in the given text and answer with the number.",
        _make_count_words, _wrong_count,
        "The text has {output} words.",
        "The count is off; the correct count is {correct}.",
        negatives=2,
    ),
    _TaskSpec(
        9005, "demo_add_two_numbers", "Arithmetic",
        "Add the two numbers and write the result as a number.",
        _make_add_two, _wrong_sum,
        "{input} equals {output}.",
        "{input} is not {output}; it equals {correct}.",
        negatives=2,
    ),
    _TaskSpec(
        9006, "demo_animal_mention", "Text Categorization",
        "Does the sentence mention an animal? Answer \"yes\" or \"no\".",
        _make_animal_mention, _wrong_yes_no,
        "Checking every word for an animal gives the answer \"{output}\".",
        "The answer is \"{correct}\", not \"{output}\", after checking every word for an animal.",
    ),
    _TaskSpec(
        9007, "demo_review_sentiment", "Sentiment Analysis",
        "Is the review positive or negative? Answer \"positive\" or \"negative\".",
        _make_review, _wrong_sentiment,
        "The review's key word shows it is {output}.",
        "The review's key word shows it is {correct}, not {output}.",
    ),
    _TaskSpec(
        9008, "demo_uppercase", "Text Transformation",
        "Rewrite the given text in uppercase letters.",
        _make_uppercase, _wrong_uppercase,
        "Every letter is made uppercase.",
        "Only the first letter is uppercase; every letter should be: \"{correct}\".",
    ),
    _TaskSpec(
        9009, "demo_count_letters", "Counting",
        "Count the letters in the given word and answer with the number.",
        _make_count_letters, _wrong_count,
        "The word \"{input}\" has {output} letters.",
        "The word \"{input}\" has {correct} letters, not {output}.",
    ),
    _TaskSpec(
        9010, "demo_larger_number", "Arithmetic",
        "Two numbers are given. Write the larger of the two.",
        _make_larger, _wrong_larger,
        "{output} is the larger number.",
        "{output} is the smaller number; the larger is {correct}.",
    ),
    _TaskSpec(
        9011, "demo_fruit_mention", "Text Categorization",
        "Does the sentence mention a fruit? Answer \"yes\" or \"no\".",
        _make_fruit_mention, _wrong_yes_no,
        "Checking every word for a fruit gives the answer \"{output}\".",
        "The answer is \"{correct}\", not \"{output}\", after checking every word for a fruit.",
    ),
    _TaskSpec(
        9012, "demo_last_letter", "Word Extraction",
        "Write the last letter of the given word.",
        _make_last_letter, _wrong_last_letter,
        "The word \"{input}\" ends with \"{output}\".",
        "\"{output}\" is the first letter; the last letter is \"{correct}\".",
    ),
)  # fmt: skip

_DEMO_TEST_SPECS: tuple[_TaskSpec, ...] = (
    _TaskSpec(
        9101, "demo_repeat_input", "Text Copying",
        "Copy the input text exactly as it is given, word for word.",
        _make_copy, _wrong_copy,
        "The input is repeated unchanged.",
        "A word was dropped; repeated exactly it is \"{correct}\".",
    ),
    _TaskSpec(
        9102, "demo_last_word", "Word Extraction",
        "Write the last word of the given text.",
        _make_last_word, _wrong_last_word,
        "The text ends with \"{output}\".",
        "\"{output}\" is where the text begins; it ends with \"{correct}\".",
    ),
    _TaskSpec(
        9103, "demo_add_three_numbers", "Arithmetic",
        "Add the three numbers and write the result as a number.",
        _make_add_three, _wrong_sum,
        "The three numbers sum to {output}.",
        "{output} leaves out the last number; the total is {correct}.",
    ),
    _TaskSpec(
        9104, "demo_colour_mention", "Text Categorization",
        "Does the sentence mention a colour? Answer \"yes\" or \"no\".",
        _make_colour_mention, _wrong_yes_no,
        "Looking for a colour word gives \"{output}\".",
        "Looking for a colour word gives \"{correct}\", not \"{output}\".",
    ),
    _TaskSpec(
        9105, "demo_lowercase", "Text Transformation",
        "Rewrite the given text in lowercase letters.",
        _make_lowercase, _wrong_lowercase,
        "All capital letters become small letters.",
        "The capitals were not changed; in lowercase it is \"{correct}\".",
    ),
    _TaskSpec(
        9106, "demo_opinion_polarity", "Sentiment Analysis",
        "Is the opinion positive or negative? Answer \"positive\" or \"negative\".",
        _make_opinion, _wrong_sentiment,
        "The opinion word is {output}.",
        "The opinion word is {correct}, so \"{output}\" is wrong.",
    ),
)  # fmt: skip

_PRETRAIN_TRAIN_SPECS: tuple[_TaskSpec, ...] = (
    _TaskSpec(
        9201, "pretrain_repeat_second_word", "Word Extraction",
        "Repeat the second word of the input.",
        _make_second_word, _wrong_second_word,
        "The second word is \"{output}\".",
        "\"{output}\" is the first word; the second is \"{correct}\".",
    ),
    _TaskSpec(
        9202, "pretrain_fill_missing_letter", "Text Completion",
        "One letter of the word is replaced by an underscore. Write the complete word.",
        _make_fill_missing, _wrong_fill_missing,
        "Filling the gap gives the word \"{output}\".",
        "\"{output}\" is not a word; the gap gives \"{correct}\".",
    ),
    _TaskSpec(
        9203, "pretrain_join_words", "Text Transformation",
        "Join the two words into one word by removing the space.",
        _make_join_words, _wrong_join_words,
        "Without the space the words read \"{output}\".",
        "The words were joined in the wrong order; it should be \"{correct}\".",
    ),
    _TaskSpec(
        9204, "pretrain_remove_digits", "Text Cleaning",
        "Remove every digit from the text and write what remains.",
        _make_remove_digits, _wrong_remove_digits,
        "With the digits removed the text is \"{output}\".",
        "Some digits are still there; the clean text is \"{correct}\".",
    ),
    _TaskSpec(
        9205, "pretrain_spell_out", "Text Transformation",
        "Spell the word by writing its letters separated by spaces.",
        _make_spell_out, _wrong_spell_out,
        "The letters of \"{input}\" are written with a space between each two.",
        "A letter is missing; the spelling is \"{correct}\".",
    ),
)  # fmt: skip

_PRETRAIN_TEST_SPECS: tuple[_TaskSpec, ...] = (
    _TaskSpec(
        9206, "pretrain_repeat_word_twice", "Text Copying",
        "Write the given word two times, separated by a space.",
        _make_repeat_twice, _wrong_repeat_twice,
        "The word is written twice.",
        "The word is written only once; twice it is \"{correct}\".",
    ),
)  # fmt: skip

DEMO_TRAIN_TASKS: tuple[str, ...] = tuple(spec.name for spec in _DEMO_TRAIN_SPECS)
DEMO_TEST_TASKS: tuple[str, ...] = tuple(spec.name for spec in _DEMO_TEST_SPECS)
PRETRAIN_TRAIN_TASKS: tuple[str, ...] = tuple(spec.name for spec in _PRETRAIN_TRAIN_SPECS)
PRETRAIN_TEST_TASKS: tuple[str, ...] = tuple(spec.name for spec in _PRETRAIN_TEST_SPECS)

# ----------------------------------------------------------------------------------------------------
# Generation.


def _derived_seed(seed: int, task_name: str, purpose: str) -> int:
    """A 64-bit seed for one task and purpose, stable across processes and Python versions."""
    digest = hashlib.sha256(f"peftbench-demo/{seed}/{task_name}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _valid(instance: Instance) -> bool:
    text, outputs = instance
    return 0 < len(text) <= MAX_INPUT_CHARS and all(0 < len(o) <= MAX_OUTPUT_CHARS for o in outputs)


def _build_task(spec: _TaskSpec, seed: int, num_instances: int) -> dict[str, Any]:
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


def _split_table(title: str, specs: Sequence[_TaskSpec], per_task: int) -> list[str]:
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
    lines += _split_table(f"{DEMO_SPLIT} / train", _DEMO_TRAIN_SPECS, params["train_instances"])
    lines += _split_table(f"{DEMO_SPLIT} / test", _DEMO_TEST_SPECS, params["test_instances"])
    lines += _split_table(f"{PRETRAIN_SPLIT} / train", _PRETRAIN_TRAIN_SPECS, params["pretrain_instances"])
    lines += _split_table(f"{PRETRAIN_SPLIT} / test", _PRETRAIN_TEST_SPECS, params["pretrain_instances"])
    return "\n".join(lines)


def _write_dataset(root: Path, params: dict[str, Any]) -> None:
    """Write every file of the dataset under ``root``; the stamp comes last."""
    seed = params["seed"]
    train, test, pretrain = params["train_instances"], params["test_instances"], params["pretrain_instances"]
    splits = (
        (DEMO_SPLIT, _DEMO_TRAIN_SPECS, _DEMO_TEST_SPECS, train, test),
        (PRETRAIN_SPLIT, _PRETRAIN_TRAIN_SPECS, _PRETRAIN_TEST_SPECS, pretrain, pretrain),
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)
        _write_dataset(tmp, params)
        _install(tmp, target, params)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
