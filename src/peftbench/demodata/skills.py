"""The demo's skills: instance makers ``make(rng) -> (input, acceptable outputs)`` and plausible wrong answers
``wrong(rng, input, outputs) -> str``, for the instruction-tuning tasks and the base's pre-training tasks."""

from __future__ import annotations

import random

from peftbench.demodata.words import (
    ADJECTIVES,
    ALL_REAL_WORDS,
    ANIMALS,
    COLOURS,
    CONSONANTS,
    DIGITS,
    FRUITS,
    MAX_INPUT_CHARS,
    MAX_OUTPUT_CHARS,
    NEGATIVE_WORDS,
    NOUNS,
    POSITIVE_WORDS,
    REVIEW_ITEMS,
    VOWELS,
    Instance,
    any_word,
    article,
    distinct_words,
    flip,
    mention_sentence,
    number_refs,
    plain,
    pseudo_word,
)

# ----------------------------------------------------------------------------------------------------
# Instance makers: ``make(rng) -> (input, acceptable outputs)`` and ``wrong(rng, input, outputs) -> str``.


def make_copy(rng: random.Random) -> Instance:
    words = distinct_words(rng, plain, 2, 4, MAX_OUTPUT_CHARS)
    if rng.random() < 0.3:
        words[0] = words[0].capitalize()
    text = " ".join(words)
    return text, [text]


def wrong_copy(rng: random.Random, text: str, outputs: list[str]) -> str:
    words = text.split()
    del words[rng.randrange(len(words))]
    return " ".join(words)


def make_reverse_words(rng: random.Random) -> Instance:
    words = distinct_words(rng, plain, 2, 4, MAX_OUTPUT_CHARS)
    return " ".join(words), [" ".join(reversed(words))]


def wrong_reverse_words(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text  # the words left in their original order


def make_first_word(rng: random.Random) -> Instance:
    words = distinct_words(rng, plain, 3, 6, MAX_INPUT_CHARS)
    return " ".join(words), [words[0]]


def make_last_word(rng: random.Random) -> Instance:
    words = distinct_words(rng, plain, 3, 6, MAX_INPUT_CHARS)
    return " ".join(words), [words[-1]]


def wrong_first_word(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text.split()[1]


def wrong_last_word(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text.split()[0]


def make_count_words(rng: random.Random) -> Instance:
    words = [plain(rng) for _ in range(rng.randint(1, 8))]
    while len(" ".join(words)) > MAX_INPUT_CHARS:
        words.pop()
    return " ".join(words), number_refs(len(words))


def wrong_count(rng: random.Random, text: str, outputs: list[str]) -> str:
    n = int(outputs[0])
    return str(n + 1 if n <= 1 or rng.random() < 0.5 else n - 1)


def make_count_letters(rng: random.Random) -> Instance:
    word = rng.choice(ALL_REAL_WORDS) if rng.random() < 0.5 else pseudo_word(rng, 3, 8)
    return word, number_refs(len(word))


def make_last_letter(rng: random.Random) -> Instance:
    while True:
        word = any_word(rng)
        if word[0] != word[-1]:
            return word, [word[-1]]


def wrong_last_letter(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text[0]


def make_add_two(rng: random.Random) -> Instance:
    a, b = rng.randint(0, 50), rng.randint(0, 50)
    return f"{a} + {b}", number_refs(a + b)


def make_add_three(rng: random.Random) -> Instance:
    a, b, c = rng.randint(0, 30), rng.randint(0, 30), rng.randint(1, 30)
    return f"{a} + {b} + {c}", number_refs(a + b + c)


def wrong_sum(rng: random.Random, text: str, outputs: list[str]) -> str:
    terms = [int(t) for t in text.split(" + ")]
    if len(terms) == 3:
        return str(terms[0] + terms[1])  # forgot the last number
    return str(sum(terms) + rng.choice((-1, 1, 10)))


def make_larger(rng: random.Random) -> Instance:
    a, b = rng.sample(range(100), 2)
    return f"{a} or {b}", [str(max(a, b))]


def wrong_larger(rng: random.Random, text: str, outputs: list[str]) -> str:
    a, b = (int(t) for t in text.split(" or "))
    return str(min(a, b))


def _yes_no(has: bool) -> list[str]:
    return ["yes" if has else "no"]


def make_animal_mention(rng: random.Random) -> Instance:
    has = rng.random() < 0.5
    sentence = mention_sentence(rng, has, ANIMALS, "noun", NOUNS + FRUITS, ADJECTIVES + COLOURS)
    return sentence, _yes_no(has)


def make_fruit_mention(rng: random.Random) -> Instance:
    has = rng.random() < 0.5
    sentence = mention_sentence(rng, has, FRUITS, "noun", NOUNS + ANIMALS, ADJECTIVES + COLOURS)
    return sentence, _yes_no(has)


def make_colour_mention(rng: random.Random) -> Instance:
    has = rng.random() < 0.5
    sentence = mention_sentence(rng, has, COLOURS, "adjective", NOUNS + ANIMALS + FRUITS, ADJECTIVES)
    return sentence, _yes_no(has)


def wrong_yes_no(rng: random.Random, text: str, outputs: list[str]) -> str:
    return flip(outputs[0], "yes", "no")


def make_review(rng: random.Random) -> Instance:
    positive = rng.random() < 0.5
    word = rng.choice(POSITIVE_WORDS if positive else NEGATIVE_WORDS)
    item = rng.choice(REVIEW_ITEMS)
    template = rng.randrange(3)
    if template == 0:
        text = f"The {item} was {rng.choice(('', 'very ', 'so '))}{word}."
    elif template == 1:
        text = f"What {article(word)} {word} {item}!"
    else:
        text = f"A {word} {item}, I would say."
    return text, ["positive" if positive else "negative"]


def make_opinion(rng: random.Random) -> Instance:
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


def wrong_sentiment(rng: random.Random, text: str, outputs: list[str]) -> str:
    return flip(outputs[0], "positive", "negative")


def make_uppercase(rng: random.Random) -> Instance:
    text = " ".join(distinct_words(rng, plain, 1, 3, MAX_OUTPUT_CHARS))
    return text, [text.upper()]


def wrong_uppercase(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text.capitalize()  # only the first letter changed


def make_lowercase(rng: random.Random) -> Instance:
    words = distinct_words(rng, plain, 1, 3, MAX_OUTPUT_CHARS)
    mixed = [w.upper() if rng.random() < 0.6 else w.capitalize() for w in words]
    text = " ".join(mixed)
    return text, [text.lower()]


def wrong_lowercase(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text  # left unchanged


# Pre-training tasks: generic byte-level skills (copy a span, denoise, compose), disjoint from the demo tasks.


def make_second_word(rng: random.Random) -> Instance:
    words = distinct_words(rng, any_word, 3, 5, MAX_INPUT_CHARS)
    return " ".join(words), [words[1]]


def wrong_second_word(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text.split()[0]


def make_fill_missing(rng: random.Random) -> Instance:
    while True:
        word = rng.choice(ALL_REAL_WORDS)
        if len(word) >= 3:
            break
    position = rng.randrange(len(word))
    pattern = word[:position] + "_" + word[position + 1 :]
    others = sorted(w for w in ALL_REAL_WORDS if w != word and _fits_blank(w, pattern))
    return pattern, [word, *others]


def _fits_blank(word: str, pattern: str) -> bool:
    return len(word) == len(pattern) and all(p in ("_", c) for c, p in zip(word, pattern, strict=True))


def wrong_fill_missing(rng: random.Random, text: str, outputs: list[str]) -> str:
    while True:
        candidate = text.replace("_", rng.choice(VOWELS + CONSONANTS))
        if candidate not in outputs:
            return candidate


def make_join_words(rng: random.Random) -> Instance:
    words = distinct_words(rng, any_word, 2, 2, MAX_OUTPUT_CHARS + 1)
    return " ".join(words), ["".join(words)]


def wrong_join_words(rng: random.Random, text: str, outputs: list[str]) -> str:
    first, second = text.split()
    return second + first


def make_remove_digits(rng: random.Random) -> Instance:
    words = distinct_words(rng, any_word, 1, 3, MAX_OUTPUT_CHARS)
    noisy = []
    for word in words:
        letters = list(word)
        for _ in range(rng.randint(1, 2)):
            letters.insert(rng.randint(0, len(letters)), rng.choice(DIGITS))
        noisy.append("".join(letters))
    return " ".join(noisy), [" ".join(words)]


def wrong_remove_digits(rng: random.Random, text: str, outputs: list[str]) -> str:
    position = next(i for i, c in enumerate(text) if c.isdigit())
    return text[:position] + text[position + 1 :]  # only the first digit removed


def make_spell_out(rng: random.Random) -> Instance:
    word = rng.choice(ALL_REAL_WORDS) if rng.random() < 0.5 else pseudo_word(rng, 3, 7)
    return word, [" ".join(word)]


def wrong_spell_out(rng: random.Random, text: str, outputs: list[str]) -> str:
    return " ".join(text[:-1])  # the last letter forgotten


def make_repeat_twice(rng: random.Random) -> Instance:
    word = any_word(rng)
    return word, [f"{word} {word}"]


def wrong_repeat_twice(rng: random.Random, text: str, outputs: list[str]) -> str:
    return text
