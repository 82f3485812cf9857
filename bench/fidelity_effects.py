"""Measured effects of the choices where peftbench differs from Tk-Instruct and the study (docs/fidelity.md).

    python bench/fidelity_effects.py [--data-dir DIR] [--max-source-length 1024] [--bpe-vocab-size 32000]

Reads a SuperNI checkout (default: ``../shared/data/superni-mini`` beside the repository; the script says so
and exits 0 when it is absent) and prints ``name: value`` lines, deterministic for the same data:

- ``cue_*``: prompts that Tk-Instruct's collator would truncate, so losing their final ``Output:`` cue,
  because their token count (special tokens included, as Tk-Instruct counts) exceeds ``max_source_length``.
  Prompts are peftbench's own (``load_examples`` with the tokenizer measuring demonstrations, as
  ``prepare_features`` does), per split, role (train/test), encoding (definition only; definition + 2
  positive examples) and tokenizer: transformers' ``ByT5Tokenizer`` (one token per byte: a pessimistic upper
  bound) and a byte-level BPE trained here on the split's prompts (``peftbench.models.train_tokenizer``, a
  proxy for a subword tokenizer such as T5's or LLaMA's, none of which is available offline; trained on
  every split's definition + 2 positive prompts).
  ``demos_dropped`` counts prompts that got fewer than the 2 requested demonstrations (Tk-Instruct and
  peftbench both drop those that do not fit).
- ``english_*``: tasks listed by each split and how many the English-only filter (``data.english_only``)
  excludes.
- ``cleanup_*``: test references changed by transformers 4.18's decoding clean-up
  (``peftbench.evaluation.generate.clean_up_tokenization``), and how many exact-match / ROUGE-L outcomes
  change when a reference is scored against its cleaned form instead of itself.

A split whose list names tasks without a file (superni-mini's ``default`` lists all 875 tasks but ships 34)
is read through a temporary copy of its lists with the missing tasks in ``excluded_tasks.txt`` (the loader's
own mechanism); the task files themselves are read in place. ``--device`` and ``--quick`` are accepted for
run_all.py and ignored (CPU only, about 30 s).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from _common import parser

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "superni-mini"
ENCODINGS = {"def": 0, "def2pos": 2}


def _split_view(data_dir: Path, split: str, root: Path) -> tuple[Path, int]:
    """A checkout whose ``split`` lists only tasks that have a file (missing ones in excluded_tasks.txt);
    returns it and how many tasks were listed without a file."""
    tasks = data_dir / "tasks"
    listed = []
    for name in ("train_tasks.txt", "test_tasks.txt"):
        listed += [line.strip() for line in (data_dir / "splits" / split / name).read_text().splitlines()]
    missing = sorted(n for n in listed if n and not (tasks / f"{n}.json").is_file())
    if not missing:
        return data_dir, 0
    view = root / split
    (view / "splits" / split).mkdir(parents=True)
    (view / "tasks").symlink_to(tasks.resolve(), target_is_directory=True)
    for name in ("train_tasks.txt", "test_tasks.txt"):
        (view / "splits" / split / name).write_bytes((data_dir / "splits" / split / name).read_bytes())
    (view / "splits" / split / "excluded_tasks.txt").write_text("".join(f"{n}\n" for n in missing))
    return view, len(missing)


def _tokenizers(views: dict[str, Path], vocab_size: int) -> dict:
    from transformers import ByT5Tokenizer

    from peftbench.config import DataConfig
    from peftbench.data.examples import load_examples
    from peftbench.models import train_tokenizer

    texts = []
    for split, view in views.items():  # the BPE learns from the prompts it measures (def + 2 pos)
        data = load_examples(DataConfig(str(view), split=split, num_pos_examples=2))
        texts += [e.source for e in data.train + data.test]
    return {"byt5": ByT5Tokenizer(), "bpe": train_tokenizer(texts, vocab_size=vocab_size)}


def measure_truncation(data_dir: Path, split: str, tokenizers: dict, max_source_length: int) -> None:
    from peftbench.config import DataConfig
    from peftbench.data.examples import load_examples

    for tok_name, tok in tokenizers.items():

        def lengths_fn(texts: list[str], tok=tok) -> list[int]:  # as peftbench.data.pipeline._build measures
            return [len(ids) for ids in tok(texts, return_attention_mask=False)["input_ids"]]

        for enc_name, pos in ENCODINGS.items():
            data = load_examples(
                DataConfig(str(data_dir), split=split, num_pos_examples=pos),
                lengths_fn=lengths_fn,
                max_source_length=max_source_length,
            )
            for role in ("train", "test"):
                sources = [e.source for e in getattr(data, role)]
                lengths = lengths_fn(sources)
                over = sum(n > max_source_length for n in lengths)
                key = f"cue_{split}_{role}_{enc_name}_{tok_name}"
                print(f"{key}_over_{max_source_length}: {over}/{len(sources)} ({100 * over / len(sources):.1f}%)")
                print(f"{key}_max_tokens: {max(lengths)}")
                if pos:
                    dropped = sum(f" Positive Example {pos} -\n" not in s for s in sources)
                    print(f"{key}_demos_dropped: {dropped}/{len(sources)}")


def measure_english(data_dir: Path, split: str, missing: int) -> None:
    from peftbench.config import DataConfig
    from peftbench.data.examples import load_examples

    data = load_examples(DataConfig(str(data_dir), split=split))
    kept = data.stats["train_tasks"] + data.stats["test_tasks"]
    print(f"english_{split}_tasks_listed: {kept + data.stats['excluded_non_english_tasks'] + missing}")
    print(f"english_{split}_tasks_without_file: {missing}")
    print(f"english_{split}_tasks_excluded_non_english: {data.stats['excluded_non_english_tasks']}")
    print(f"english_{split}_tasks_kept: {kept}")


def measure_cleanup(data_dir: Path, split: str) -> None:
    from peftbench.config import DataConfig
    from peftbench.data.examples import load_examples
    from peftbench.evaluation.generate import clean_up_tokenization
    from peftbench.evaluation.metrics import exact_match, max_over_references, rouge_l

    test = load_examples(DataConfig(str(data_dir), split=split)).test
    refs = [r for e in test for r in e.references]
    changed = [r for r in refs if clean_up_tokenization(r) != r]
    em_changed = sum(exact_match(clean_up_tokenization(r), r) != 1.0 for r in changed)
    rouge_changed = sum(rouge_l(clean_up_tokenization(r), r) != 1.0 for r in changed)
    # an instance scored as the max over its references: a prediction equal to its first reference, cleaned
    inst_em = sum(
        max_over_references(exact_match, clean_up_tokenization(e.references[0]), list(e.references)) != 1.0
        for e in test
    )
    print(f"cleanup_{split}_test_references_changed: {len(changed)}/{len(refs)}")
    print(f"cleanup_{split}_test_references_exact_match_changed: {em_changed}/{len(refs)}")
    print(f"cleanup_{split}_test_references_rougeL_changed: {rouge_changed}/{len(refs)}")
    print(f"cleanup_{split}_test_instances_exact_match_changed: {inst_em}/{len(test)}")
    tasks = sorted({e.task for e in test if any(clean_up_tokenization(r) != r for r in e.references)})
    print(f"cleanup_{split}_test_tasks_with_changed_references: {len(tasks)} {' '.join(tasks)}".rstrip())


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="SuperNI checkout (tasks/ and splits/)")
    p.add_argument("--splits", default="default,mini", help="comma-separated split names")
    p.add_argument("--max-source-length", type=int, default=1024)
    p.add_argument("--bpe-vocab-size", type=int, default=32000, help="vocabulary of the trained BPE proxy")
    args = p.parse_args()
    data_dir = Path(args.data_dir)
    if not (data_dir / "tasks").is_dir() or not (data_dir / "splits").is_dir():
        print(f"skipped: no SuperNI checkout at {data_dir} (pass --data-dir)")
        return 0
    logging.disable(logging.WARNING)  # the loader's per-task notes; this script prints its own lines
    splits = [s for s in args.splits.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="peftbench-fidelity-") as tmp:
        views = {split: _split_view(data_dir, split, Path(tmp)) for split in splits}
        tokenizers = _tokenizers({split: view for split, (view, _) in views.items()}, args.bpe_vocab_size)
        for split in splits:
            view, missing = views[split]
            measure_english(view, split, missing)
            measure_truncation(view, split, tokenizers, args.max_source_length)
            measure_cleanup(view, split)
    return 0


if __name__ == "__main__":
    sys.exit(main())
