"""Tests for the official SuperNI scoring in peftbench.evaluation.metrics."""

from __future__ import annotations

import json
import random
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from peftbench.errors import PeftbenchError
from peftbench.evaluation import metrics
from peftbench.evaluation.metrics import (
    exact_match,
    max_over_references,
    normalize_answer,
    read_predictions,
    rouge_l,
    score_predictions,
    write_metrics,
)

# ----------------------------------------------------------------------------- helpers

SENTENCES = [
    "Hello world, this is a tiny corpus for a tiny tokenizer.",
    "The cat sat on the mat and the dog ran after the cat.",
    "Running dogs run fast; the runner was running.",
    "Answer: yes. Answer: no. The answer is maybe.",
] * 5


def _make_tokenizer(directory: Path, vocab_size: int) -> str:
    """Build a GPT-2-style byte-level BPE tokenizer offline and save it to ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    fast.save_pretrained(str(directory))
    return str(directory)


@pytest.fixture(scope="module")
def byte_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> str:
    """No merges: every byte is its own token (so values can be worked out by hand)."""
    return _make_tokenizer(tmp_path_factory.mktemp("bytes_tok"), vocab_size=0)


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tokenizer with real BPE merges (multi-character tokens like 'Ġthe')."""
    return _make_tokenizer(tmp_path_factory.mktemp("bpe_tok"), vocab_size=400)


def _rec(i: int, task: str, prediction: str | None, references: list[str], category: str | None = None):
    record = {"id": f"ex{i}", "task": task, "prediction": prediction, "references": references}
    if category is not None:
        record["category"] = category
    return record


# Naive re-implementation of the official compute_metrics.py (fresh RougeScorer per call).
def _official_normalize(s):
    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_punc(s.lower()))


def _official_metrics(predictions, references, tokenizer=None):
    em_total, rouge_total = 0, 0
    for pred, gold in zip(predictions, references, strict=True):
        em_total += max(_official_normalize(pred) == _official_normalize(g) for g in gold)
        scores = []
        for g in gold:
            if tokenizer is None:
                scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
            else:
                scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=tokenizer)
            scores.append(scorer.score(prediction=pred, target=g)["rougeL"].fmeasure)
        rouge_total += max(scores)
    n = len(references)
    return {
        "exact_match": round(100.0 * em_total / n, 4),
        "rougeL": round(100.0 * rouge_total / n, 4),
        "num_examples": n,
    }


def _official_grouped(records, key, tokenizer=None):
    groups: dict[str, list] = {}
    for r in records:
        if r.get(key) is not None:
            groups.setdefault(r[key], []).append(r)
    return {
        g: _official_metrics([r["prediction"] or "" for r in rs], [r["references"] for r in rs], tokenizer=tokenizer)
        for g, rs in sorted(groups.items())
    }


def _random_records(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    words = ["The", "the", "a", "cat", "cats", "dog", "dogs", "running", "run", "Yes", "no", "42"]
    words += ["answer", "answers", "mat", "sat", "é", "über", "naïve", "ran", "fast", "faster"]
    punct = ["", "", "", ".", ",", "!", "?", " -", "'s"]
    pool = [" ".join(rng.choice(words) + rng.choice(punct) for _ in range(rng.randint(1, 8))) for _ in range(40)]
    pool += ["", "   ", "..."]
    records = []
    for i in range(n):
        refs = rng.sample(pool, rng.randint(1, 3))
        pred_choice = rng.random()
        if pred_choice < 0.05:
            pred = None
        elif pred_choice < 0.35:
            pred = rng.choice(refs)  # repeated strings exercise the caches
        else:
            pred = rng.choice(pool)
        category = rng.choice(["cat_a", "cat_b", "cat_c", None])
        records.append(_rec(i, f"task{rng.randint(1, 6)}", pred, refs, category))
    return records


class _OfficialGPTTokenizer:
    """The official GPTTokenizer, pointed at a local tokenizer."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        self.gpt_tokenizer = AutoTokenizer.from_pretrained(path)

    def tokenize(self, s):
        return [t.lstrip("Ġ") for t in self.gpt_tokenizer.tokenize(s)]


# ----------------------------------------------------------------------------- exact match


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  The  Cat, sat!  ", "the cat sat"),
        ("Hello,World", "helloworld"),  # punctuation is deleted, not replaced by a space
        ("A\tdog\n\nran.", "a dog ran"),
        ("an apple", "an apple"),  # articles are kept
        ("...", ""),
        ("Café  ÜBER", "café über"),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_exact_match_keeps_articles_and_ignores_case_punct_space() -> None:
    assert exact_match("The cat", "cat") == 0.0
    assert exact_match("an answer", "answer") == 0.0
    assert exact_match("The cat.", "  the   CAT ") == 1.0
    assert exact_match("Yes!", "yes") == 1.0
    assert isinstance(exact_match("a", "a"), float)


def test_exact_match_max_over_references() -> None:
    assert max_over_references(exact_match, "yes", ["No", "Yes."]) == 1.0
    assert max_over_references(exact_match, "maybe", ["No", "Yes."]) == 0.0


def test_max_over_references_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least one reference"):
        max_over_references(exact_match, "x", [])


# ----------------------------------------------------------------------------- ROUGE-L


def test_rouge_l_partial_overlap_hand_computed() -> None:
    # pred tokens [the, cat, sat], ref tokens [the, big, cat, ran]; LCS = "the cat" = 2.
    # P = 2/3, R = 2/4, F = 2PR/(P+R) = (2/3)/(7/6) = 4/7 = 0.571428...
    assert rouge_l("the cat sat", "the big cat ran") == pytest.approx(4 / 7, abs=1e-12)
    # F is symmetric in P and R, so swapping prediction and reference gives the same F.
    assert rouge_l("the big cat ran", "the cat sat") == pytest.approx(4 / 7, abs=1e-12)


def test_rouge_l_stemming() -> None:
    assert rouge_l("running dogs", "run dog") == 1.0
    unstemmed = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    assert unstemmed.score("run dog", "running dogs")["rougeL"].fmeasure == 0.0


def test_rouge_l_case_and_punctuation_insensitive_default_track() -> None:
    assert rouge_l("Hello, World!", "hello world") == 1.0
    assert rouge_l("", "hello") == 0.0
    assert rouge_l("你好", "你好") == 0.0  # default tokenizer keeps only [a-z0-9] tokens


def test_rouge_l_max_over_references() -> None:
    refs = ["a dog", "the big cat ran", "the cat sat down"]
    # best: "the cat sat down": LCS 3, P = 3/3, R = 3/4 -> F = 2*0.75/1.75 = 6/7.
    assert max_over_references(rouge_l, "the cat sat", refs) == pytest.approx(6 / 7, abs=1e-12)


# ----------------------------------------------------------------------------- aggregation


def test_score_predictions_rounding_and_none_prediction() -> None:
    records = [
        _rec(0, "t", "the cat sat", ["the big cat ran"]),  # EM 0, R 4/7
        _rec(1, "t", "yes", ["Yes."]),  # EM 1, R 1
        _rec(2, "t", None, ["cat"]),  # "" -> EM 0, R 0
    ]
    out = score_predictions(records)
    # EM: 100 * 1/3 = 33.3333...; ROUGE-L: 100 * (4/7 + 1) / 3 = 52.380952... -> 52.381
    assert out["overall"] == {"exact_match": 33.3333, "rougeL": 52.381, "num_examples": 3}
    assert out["track"] == "default"
    assert out["per_category"] == {}


def test_none_prediction_is_empty_string() -> None:
    # "" normalises to "" and so does "...": exact match; ROUGE-L has no tokens: 0.
    out = score_predictions([_rec(0, "t", None, ["..."])])
    assert out["overall"] == {"exact_match": 100.0, "rougeL": 0.0, "num_examples": 1}
    same = score_predictions([_rec(0, "t", "", ["..."])])
    assert same == out


def test_two_thirds_rounds_up() -> None:
    records = [_rec(i, "t", p, ["yes"]) for i, p in enumerate(["yes", "Yes", "no"])]
    out = score_predictions(records)
    assert out["overall"]["exact_match"] == 66.6667
    assert out["overall"]["rougeL"] == 66.6667


def test_grouping_per_task_and_category() -> None:
    records = [
        _rec(0, "task_b", "yes", ["yes"], category="cls"),  # EM 1, R 1
        _rec(1, "task_b", "no", ["yes"], category="cls"),  # EM 0, R 0
        _rec(2, "task_a", "the cat sat", ["the big cat ran"], category="gen"),  # EM 0, R 4/7
        _rec(3, "task_a", "running dogs", ["run dog"], category="cls"),  # EM 0, R 1
        _rec(4, "task_a", "The end", ["the end."]),  # no category; EM 1, R 1
    ]
    out = score_predictions(records)
    assert out["overall"] == {
        "exact_match": 40.0,  # 2/5
        "rougeL": round(100 * (1 + 0 + 4 / 7 + 1 + 1) / 5, 4),  # 71.4286
        "num_examples": 5,
    }
    assert out["overall"]["rougeL"] == 71.4286
    assert list(out["per_task"]) == ["task_a", "task_b"]
    assert out["per_task"]["task_a"] == {"exact_match": 33.3333, "rougeL": 85.7143, "num_examples": 3}
    assert out["per_task"]["task_b"] == {"exact_match": 50.0, "rougeL": 50.0, "num_examples": 2}
    assert list(out["per_category"]) == ["cls", "gen"]
    assert out["per_category"]["cls"] == {"exact_match": 33.3333, "rougeL": 66.6667, "num_examples": 3}
    assert out["per_category"]["gen"] == {"exact_match": 0.0, "rougeL": 57.1429, "num_examples": 1}
    assert sum(m["num_examples"] for m in out["per_category"].values()) == 4  # record 4 has none


def test_category_none_is_no_group() -> None:
    out = score_predictions([{**_rec(0, "t", "a", ["a"]), "category": None}])
    assert out["per_category"] == {}


def test_bit_identical_to_naive_official_loop() -> None:
    records = _random_records(seed=1234, n=400)
    out = score_predictions(records)
    preds = [r["prediction"] or "" for r in records]
    refs = [r["references"] for r in records]
    assert out["overall"] == _official_metrics(preds, refs)
    assert out["per_task"] == _official_grouped(records, "task")
    assert out["per_category"] == _official_grouped(records, "category")
    # Scoring again (now fully from the caches) gives the same result.
    assert score_predictions(records) == out


def test_score_predictions_accepts_generator_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    out = score_predictions((r for r in [_rec(0, "t", "a", ["a"])]), progress=True)
    assert out["overall"]["exact_match"] == 100.0
    assert "scoring" in capsys.readouterr().err


def test_score_predictions_errors() -> None:
    with pytest.raises(PeftbenchError, match="no predictions"):
        score_predictions([])
    with pytest.raises(PeftbenchError, match=r"record 1 .*missing key 'references'"):
        score_predictions([_rec(0, "t", "a", ["a"]), {"id": "x", "task": "t", "prediction": "a"}])
    with pytest.raises(PeftbenchError, match="non-empty list of strings"):
        score_predictions([_rec(0, "t", "a", [])])
    with pytest.raises(PeftbenchError, match="string or null"):
        score_predictions([_rec(0, "t", 3, ["a"])])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- cross-lingual track


def test_xlingual_hand_computed(byte_tokenizer: str) -> None:
    # With no merges every byte is a token and a lone "Ġ" (the space) becomes "" after lstrip.
    # "Hello World" -> [H,e,l,l,o,"",W,o,r,l,d]; "hello world" -> [h,e,l,l,o,"",w,o,r,l,d].
    # Case-sensitive: LCS = 9 of 11 tokens each -> P = R = F = 9/11.
    assert rouge_l("Hello World", "hello world", xlingual_tokenizer=byte_tokenizer) == pytest.approx(9 / 11)
    assert rouge_l("Hello World", "hello world") == 1.0  # default track lower-cases
    # Non-Latin text: no tokens at all on the default track, full match on the xlingual one.
    assert rouge_l("你好", "你好", xlingual_tokenizer=byte_tokenizer) == 1.0
    assert rouge_l("你好", "你好") == 0.0
    # "ab cd" -> [a,b,"",c,d] vs "ab" -> [a,b]: LCS 2, P = 2/5, R = 1 -> F = 0.8/1.4 = 4/7.
    assert rouge_l("ab cd", "ab", xlingual_tokenizer=byte_tokenizer) == pytest.approx(4 / 7)
    # No stemming on this track: [d,o,g,s] vs [d,o,g]: P = 3/4, R = 1 -> F = 6/7.
    assert rouge_l("dogs", "dog", xlingual_tokenizer=byte_tokenizer) == pytest.approx(6 / 7)


def test_xlingual_score_predictions(byte_tokenizer: str) -> None:
    records = [_rec(0, "t", "Hello World", ["hello world"]), _rec(1, "t", "你好", ["你好"])]
    default = score_predictions(records)
    xl = score_predictions(records, xlingual=True, xlingual_tokenizer=byte_tokenizer)
    assert default["track"] == "default" and xl["track"] == "xlingual"
    assert default["overall"] == {"exact_match": 100.0, "rougeL": 50.0, "num_examples": 2}
    # EM is the same on both tracks; ROUGE-L = 100 * (9/11 + 1) / 2 = 90.909090...
    assert xl["overall"] == {"exact_match": 100.0, "rougeL": 90.9091, "num_examples": 2}


def test_xlingual_bit_identical_to_naive_official_loop(bpe_tokenizer: str) -> None:
    official_tok = _OfficialGPTTokenizer(bpe_tokenizer)
    assert any(len(t) > 1 for t in official_tok.tokenize("the cat sat on the mat"))  # real merges
    records = _random_records(seed=99, n=250)
    out = score_predictions(records, xlingual=True, xlingual_tokenizer=bpe_tokenizer)
    preds = [r["prediction"] or "" for r in records]
    refs = [r["references"] for r in records]
    assert out["overall"] == _official_metrics(preds, refs, tokenizer=official_tok)
    assert out["per_task"] == _official_grouped(records, "task", tokenizer=official_tok)
    assert out["per_category"] == _official_grouped(records, "category", tokenizer=official_tok)
    assert out["overall"] != score_predictions(records)["overall"]


def test_xlingual_tokenizer_loaded_once_per_path(
    byte_tokenizer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    copy = tmp_path / "tok_copy"
    shutil.copytree(byte_tokenizer, copy)
    calls: list[str] = []
    original = transformers.AutoTokenizer.from_pretrained

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", counting)
    for _ in range(3):
        assert rouge_l("ab", "ab", xlingual_tokenizer=str(copy)) == 1.0
    score_predictions([_rec(0, "t", "x", ["y"])], xlingual=True, xlingual_tokenizer=str(copy))
    assert calls == [str(copy)]


def test_xlingual_bad_tokenizer_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_tokenizer"
    missing.mkdir()
    with pytest.raises(PeftbenchError, match="cannot load the cross-lingual tokenizer") as info:
        rouge_l("a", "a", xlingual_tokenizer=str(missing))
    assert "\n" not in str(info.value)


def test_import_does_not_load_transformers() -> None:
    code = (
        "import sys, peftbench.evaluation.metrics as m; "
        "assert 'transformers' not in sys.modules, 'transformers imported'; "
        "assert m._default_rouge.cache_info().currsize == 0"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_scorer_is_reused() -> None:
    rouge_l("a b", "a")
    first = metrics._default_rouge()
    rouge_l("c d", "c")
    assert metrics._default_rouge() is first


# ----------------------------------------------------------------------------- files


def _write(tmp_path: Path, text: str | bytes, name: str = "predictions.jsonl") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _line(**kwargs) -> str:
    record = {"id": "a", "task": "t", "prediction": "p", "references": ["r"]}
    record.update(kwargs)
    return json.dumps({k: v for k, v in record.items() if v is not _DROP})


_DROP = object()


def test_read_predictions_ok(tmp_path: Path) -> None:
    text = "\n".join(
        [
            _line(id="a", category="cls"),
            "",
            "   ",
            _line(id="b", prediction=None, references=["x", "y"]),
            _line(id="c", category=None),
        ]
    )
    records = read_predictions(_write(tmp_path, text + "\n\n"))
    assert [r["id"] for r in records] == ["a", "b", "c"]
    assert records[0]["category"] == "cls"
    assert records[1]["prediction"] is None
    assert records[1]["references"] == ["x", "y"]
    out = score_predictions(records)
    assert out["overall"]["num_examples"] == 3
    assert list(out["per_category"]) == ["cls"]


GOOD = _line(id="g")


@pytest.mark.parametrize(
    ("lines", "lineno", "problem"),
    [
        ([GOOD, "", '{"id": "x" "task": "t"}'], 3, r"not valid JSON \(Expecting ',' delimiter\)"),
        ([_line(references=_DROP)], 1, "missing key 'references'"),
        ([GOOD, _line(id="b", prediction=_DROP)], 2, "missing key 'prediction'"),
        ([_line(references=[])], 1, "'references' must be a non-empty list of strings"),
        ([_line(references="r")], 1, "'references' must be a non-empty list of strings"),
        ([_line(references=["r", 3])], 1, "'references' must be a non-empty list of strings"),
        ([_line(prediction=7)], 1, "prediction must be a string or null"),
        ([_line(prediction=["p"])], 1, "prediction must be a string or null"),
        ([_line(id=5)], 1, "'id' must be a non-empty string"),
        ([_line(task=None)], 1, "'task' must be a non-empty string"),
        ([_line(category=3)], 1, "'category' must be a string or null"),
        (["[1, 2]"], 1, "expected a JSON object, got list"),
        ([GOOD, "", _line(id="b"), "", _line(id="g")], 5, r"duplicate id 'g' \(first seen on line 1\)"),
    ],
)
def test_read_predictions_errors(tmp_path: Path, lines: list[str], lineno: int, problem: str) -> None:
    path = _write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(PeftbenchError, match=problem) as info:
        read_predictions(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{lineno}: ")


def test_read_predictions_invalid_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.encode() + b"\n\xff\xfe\n")
    with pytest.raises(PeftbenchError, match=r":2: not valid UTF-8") as info:
        read_predictions(path)
    assert "\n" not in str(info.value)


def test_read_predictions_missing_and_empty(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(PeftbenchError, match="file not found") as info:
        read_predictions(missing)
    assert str(missing) in str(info.value)
    for text in ["", "\n\n  \n"]:
        with pytest.raises(PeftbenchError, match="no records") as info:
            read_predictions(_write(tmp_path, text, name="empty.jsonl"))
        assert "empty.jsonl" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(PeftbenchError, match="is a directory"):
        read_predictions(tmp_path)


def test_write_metrics_atomic_round_trip(tmp_path: Path) -> None:
    out = score_predictions([_rec(0, "t", "über", ["über"], category="c")])
    target = tmp_path / "sub" / "metrics.json"
    write_metrics(out, target)
    assert json.loads(target.read_text(encoding="utf-8")) == out
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]
    # Overwriting replaces the content and still leaves no temp file.
    write_metrics({"overall": {"exact_match": 1.5}}, target)
    assert json.loads(target.read_text(encoding="utf-8")) == {"overall": {"exact_match": 1.5}}
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_write_metrics_failure_keeps_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.json"
    write_metrics({"a": 1}, target)
    with pytest.raises(TypeError):
        write_metrics({"a": object()}, target)

    def failing_replace(src, dst):
        assert Path(src).parent == target.parent and Path(src).read_text(encoding="utf-8")
        raise OSError("disk on fire")

    import peftbench.io

    monkeypatch.setattr(peftbench.io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write_metrics({"a": 2}, target)
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_official_keys_are_what_superni_evaluation_writes() -> None:
    """SuperNI's evaluation.py: ``category = "_".join(Categories[0].lower().split())`` and grouped metrics under
    ``f"{metric}_for_{group}"`` (compute_grouped_metrics), next to the overall ``exact_match`` / ``rougeL``."""
    records = [
        _rec(0, "task190_snli", "yes", ["yes"], category="Textual Entailment"),
        _rec(1, "task190_snli", "no", ["yes"], category="Textual Entailment"),
        _rec(2, "task1356_xlsum", "the cat sat", ["the big cat ran"], category="Title  Generation"),
    ]
    out = score_predictions(records)
    official = out["official"]
    assert out["per_category"]["Textual Entailment"]["rougeL"] == official["rougeL_for_textual_entailment"] == 50.0
    assert official["exact_match_for_title_generation"] == 0.0
    assert official["exact_match_for_task190_snli"] == 50.0
    assert official["rougeL"] == out["overall"]["rougeL"]
    expected = {"exact_match", "rougeL"} | {
        f"{m}_for_{g}" for m in ("exact_match", "rougeL")
        for g in ("task190_snli", "task1356_xlsum", "textual_entailment", "title_generation")
    }  # fmt: skip
    assert set(official) == expected


def test_empty_references_score_as_the_official_scorer() -> None:
    """Evaluation keeps empty strings among references (the official reference file does): an empty or
    missing prediction then matches an empty reference exactly (EM 1) but has no ROUGE-L tokens (0), as
    natural-instructions' eval/automatic/evaluation.py gives (re-implemented above as ``_official_metrics``)."""
    cases = [
        ("", [""]),
        (None, [""]),
        (".", [""]),  # punctuation only: normalised to "" for exact match, no ROUGE tokens either
        ("kept", ["", "kept"]),
        ("", ["", "kept"]),
        ("something", [""]),
        ("", ["", ""]),
    ]
    records = [_rec(i, "t", pred, refs) for i, (pred, refs) in enumerate(cases)]
    out = score_predictions(records)
    assert out["overall"] == _official_metrics([p or "" for p, _ in cases], [refs for _, refs in cases])
    singles = [score_predictions([r])["overall"] for r in records]
    assert [(s["exact_match"], s["rougeL"]) for s in singles] == [
        (100.0, 0.0), (100.0, 0.0), (100.0, 0.0), (100.0, 100.0), (100.0, 0.0), (0.0, 0.0), (100.0, 0.0),
    ]  # fmt: skip
