"""Word lists and small drawing helpers for the demo's procedural tasks.

The pools used as "targets" (animals, colours, fruits, sentiment words) are disjoint from the neutral pools
(nouns, adjectives), so keyword-based labels are exact. Every helper takes the ``random.Random`` to draw from;
none touches the global random state.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

MAX_INPUT_CHARS = 60
"""Longest instance input, in characters (the tiny models read short texts)."""
MAX_OUTPUT_CHARS = 20
"""Longest instance output, in characters."""
MAX_DEFINITION_CHARS = 200
"""Longest task definition, in characters."""

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
ALL_REAL_WORDS: tuple[str, ...] = tuple(sorted(set(_PLAIN_WORDS + REVIEW_ITEMS)))
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
DIGITS = "0123456789"

# ----------------------------------------------------------------------------------------------------
# Small helpers. Each takes the ``random.Random`` to draw from; none touches the global random state.

Instance = tuple[str, list[str]]


def number_refs(n: int) -> list[str]:
    """Acceptable references for a number: the digits, plus the English word up to twenty."""
    return [str(n), NUMBER_WORDS[n]] if 0 <= n < len(NUMBER_WORDS) else [str(n)]


def pseudo_word(rng: random.Random, min_len: int = 3, max_len: int = 6) -> str:
    """A pronounceable made-up word (consonant-vowel alternation), e.g. ``"kobat"``."""
    length = rng.randint(min_len, max_len)
    return "".join(rng.choice(CONSONANTS if i % 2 == 0 else VOWELS) for i in range(length))


def any_word(rng: random.Random) -> str:
    """A real word half of the time, otherwise a made-up one (so unique inputs never run out)."""
    return rng.choice(ALL_REAL_WORDS) if rng.random() < 0.5 else pseudo_word(rng)


def distinct_words(
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


def plain(rng: random.Random) -> str:
    return rng.choice(_PLAIN_WORDS)


def article(word: str) -> str:
    return "an" if word[0] in VOWELS else "a"


def flip(answer: str, first: str, second: str) -> str:
    return second if answer == first else first


def mention_sentence(
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
    return f"{subject} {verb} {article(adjective)} {adjective} {noun} and {article(noun2)} {noun2}."
