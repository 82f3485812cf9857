"""A synthetic SuperNI checkout at the real default split's size, for the data-pipeline benchmark.

    python bench/superni_scale.py OUT_DIR [--train-tasks 757] [--test-tasks 119] [--instances 100]

Writes ``OUT_DIR/tasks/*.json`` and ``OUT_DIR/splits/default/{train,test}_tasks.txt`` in the layout of
github.com/allenai/natural-instructions (every field ``load_superni`` reads, English only), seeded and
deterministic. The text is pseudo-English (Zipf-distributed made-up words with punctuation), so a subword
tokenizer trained on it splits it about as finely as a real one splits English.

Lengths follow SuperNI (words; superni-mini measured with the snippet in docs/benchmarks.md, plus the
SuperNI paper's averages): definitions median 45, mean ~55; 1-5 positive and 0-4 negative examples; instance
inputs vary per task (a per-task median drawn log-normally around 30 words, so some tasks carry passages of
hundreds of words) and per instance around it; 60% of tasks are classification-like (one of 2-5 short
labels), the rest generate a few words to a few dozen; 1-3 references per instance.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

CATEGORIES = (
    "Textual Entailment", "Cause Effect Classification", "Coreference Resolution", "Dialogue Act Recognition",
    "Answerability Classification", "Word Analogy", "Overlap Extraction", "Keyword Tagging",
    "Question Rewriting", "Title Generation", "Data to Text", "Grammar Error Correction",
)  # fmt: skip
"""The 12 categories of SuperNI's English test tasks."""

TRAIN_CATEGORIES = (
    "Question Answering", "Sentiment Analysis", "Text Categorization", "Program Execution", "Translation",
    "Summarization", "Question Generation", "Information Extraction", "Commonsense Classification",
    "Toxic Language Detection", "Text Matching", "Story Composition", "Fill in The Blank", "Misc.",
)  # fmt: skip

_SYLLABLES = [c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou", "er", "an", "in")]


class _Words:
    """A Zipf-distributed vocabulary of made-up words."""

    def __init__(self, rng: random.Random, size: int = 30_000) -> None:
        seen: set[str] = set()
        words: list[str] = []
        while len(words) < size:
            n = min(1 + int(rng.expovariate(0.7)), 6)
            word = "".join(rng.choice(_SYLLABLES) for _ in range(n))
            if word not in seen:
                seen.add(word)
                words.append(word)
        words.sort(key=len)  # frequent words are short, as in English
        self.words = words
        total = 0.0
        self.cum: list[float] = []
        for rank in range(1, size + 1):
            total += 1.0 / rank
            self.cum.append(total)

    def text(self, rng: random.Random, n: int) -> str:
        picked = rng.choices(self.words, cum_weights=self.cum, k=max(n, 1))
        out: list[str] = []
        for i, word in enumerate(picked):
            if i == 0 or out[-1].endswith("."):
                word = word.capitalize()
            if i == len(picked) - 1 or rng.random() < 0.07:
                word += "."
            elif rng.random() < 0.05:
                word += ","
            out.append(word)
        return " ".join(out)


def _lognormal_words(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return int(min(max(round(median * math.exp(rng.gauss(0.0, sigma))), low), high))


def _task(rng: random.Random, words: _Words, name: str, category: str, instances: int) -> dict:
    median_input = _lognormal_words(rng, 30, 1.0, 3, 800)
    classification = rng.random() < 0.6
    labels = [words.text(rng, rng.randint(1, 2)).rstrip(".") for _ in range(rng.randint(2, 5))]
    median_output = _lognormal_words(rng, 8, 0.8, 1, 200)

    def sample_input() -> str:
        return words.text(rng, _lognormal_words(rng, median_input, 0.4, 1, 3000))

    def sample_output() -> str:
        if classification:
            return rng.choice(labels)
        return words.text(rng, _lognormal_words(rng, median_output, 0.5, 1, 400))

    def demonstration() -> dict:
        return {"input": sample_input(), "output": sample_output(), "explanation": words.text(rng, rng.randint(5, 30))}

    return {
        "Contributors": ["peftbench synthetic"],
        "Source": ["synthetic"],
        "URL": [],
        "Categories": [category],
        "Reasoning": [],
        "Definition": [words.text(rng, _lognormal_words(rng, 45, 0.5, 8, 400))],
        "Input_language": ["English"],
        "Output_language": ["English"],
        "Instruction_language": ["English"],
        "Domains": ["Synthetic"],
        "Positive Examples": [demonstration() for _ in range(rng.randint(1, 5))],
        "Negative Examples": [demonstration() for _ in range(rng.randint(0, 4))],
        "Instances": [
            {"id": f"{name}-{i:032x}", "input": sample_input(), "output": [sample_output() for _ in range(refs)]}
            for i, refs in enumerate(rng.choice((1, 1, 1, 2, 3)) for _ in range(instances))
        ],
        "Instance License": ["Unknown"],
    }


def generate(root: Path, train_tasks: int = 757, test_tasks: int = 119, instances: int = 100, seed: int = 0) -> Path:
    """Writes the synthetic checkout (deterministic for a seed) and returns ``root``."""
    rng = random.Random(seed)
    words = _Words(rng)
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    split = root / "splits" / "default"
    split.mkdir(parents=True, exist_ok=True)
    names = {"train": [], "test": []}
    for role, count, categories in (("train", train_tasks, TRAIN_CATEGORIES), ("test", test_tasks, CATEGORIES)):
        for i in range(count):
            number = len(names["train"]) + len(names["test"]) + 1
            category = categories[i % len(categories)]
            name = f"task{number:04d}_synthetic_{category.lower().replace(' ', '_').strip('.')}"
            task = _task(rng, words, name, category, instances)
            (root / "tasks" / f"{name}.json").write_text(json.dumps(task, indent=4), encoding="utf-8")
            names[role].append(name)
    for role in ("train", "test"):
        (split / f"{role}_tasks.txt").write_text("\n".join(names[role]) + "\n", encoding="utf-8")
    return root


def corpus(root: Path, limit: int = 200) -> list[str]:
    """Texts of the first ``limit`` task files (to train a tokenizer on, as a real one was trained on English)."""
    texts = ["Definition: . Now complete the following example -\nInput: .\nOutput: Positive Example Negative"]
    for path in sorted((root / "tasks").glob("*.json"))[:limit]:
        task = json.loads(path.read_text(encoding="utf-8"))
        texts += task["Definition"]
        texts += [inst["input"] for inst in task["Instances"]]
        texts += [out for inst in task["Instances"] for out in inst["output"]]
    return texts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--train-tasks", type=int, default=757)
    p.add_argument("--test-tasks", type=int, default=119)
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    generate(args.out_dir, args.train_tasks, args.test_tasks, args.instances, args.seed)
    print(f"wrote {args.out_dir} ({args.train_tasks} + {args.test_tasks} tasks x {args.instances} instances)")


if __name__ == "__main__":
    main()
