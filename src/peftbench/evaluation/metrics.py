"""Official Super-NaturalInstructions scoring: exact match and ROUGE-L.

Reproduces ``compute_metrics.py`` from the SuperNI / Tk-Instruct code (and the ROUGE-L of
``natural-instructions/eval/automatic/evaluation.py``):

* exact match compares SQuAD-style normalised strings (lower-case, punctuation removed,
  whitespace collapsed) but, unlike SQuAD, articles are kept;
* ROUGE-L is the F-measure of ``rouge_score``'s ``RougeScorer(['rougeL'], use_stemmer=True)``
  called as ``score(prediction=..., target=reference)``;
* the cross-lingual track uses ROUGE-L over GPT-2 byte-level BPE tokens with the leading
  ``"Ġ"`` stripped (case-sensitive, no stemming);
* each instance scores the maximum over its references; averages are ``100 * mean``, rounded
  to 4 decimals.

Tokenisations and pair scores are memoised; since both are pure functions of the strings,
results are bit-identical to scoring every example with a fresh ``RougeScorer``.
"""

from __future__ import annotations

import functools
import json
import string
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from rouge_score import rouge_scorer, tokenizers
from tqdm import tqdm

from peftbench.errors import PeftbenchError
from peftbench.io import atomic_write_json

__all__ = [
    "exact_match",
    "max_over_references",
    "normalize_answer",
    "read_predictions",
    "rouge_l",
    "score_predictions",
    "write_metrics",
]

DEFAULT_XLINGUAL_TOKENIZER = "gpt2"
REQUIRED_KEYS = ("id", "task", "prediction", "references")

_PUNCTUATION = frozenset(string.punctuation)
_TOKEN_CACHE_SIZE = 1 << 16
_PAIR_CACHE_SIZE = 1 << 16


# --------------------------------------------------------------------------- exact match


def normalize_answer(s: str) -> str:
    """Normalise an answer as the official SuperNI scorer does.

    Lower-cases, removes every ``string.punctuation`` character and collapses whitespace.
    Articles ("a", "an", "the") are deliberately kept.

    Args:
        s: Text to normalise.

    Returns:
        The normalised text.
    """
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """Exact match after :func:`normalize_answer`.

    Args:
        prediction: Model output.
        reference: One gold answer.

    Returns:
        1.0 if the normalised strings are equal, else 0.0.
    """
    return 1.0 if normalize_answer(prediction) == normalize_answer(reference) else 0.0


# --------------------------------------------------------------------------- ROUGE-L


class _MemoTokenizer(tokenizers.Tokenizer):
    """Wraps a tokenizer and memoises ``tokenize`` (tokenisation is a pure function of the text)."""

    def __init__(self, inner: tokenizers.Tokenizer | _GPTTokenizer) -> None:
        self._inner = inner
        self._memo = functools.lru_cache(maxsize=_TOKEN_CACHE_SIZE)(self._tokenize)

    def _tokenize(self, text: str) -> tuple[str, ...]:
        return tuple(self._inner.tokenize(text))

    def tokenize(self, text: str) -> tuple[str, ...]:  # type: ignore[override]
        return self._memo(text)


class _GPTTokenizer:
    """The official cross-lingual tokenizer: GPT-2 BPE tokens with the leading "Ġ" stripped."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer  # heavy import, done only when the track is used

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=int(1e9))
        except Exception as exc:  # transformers raises many types (OSError, ValueError, ...)
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PeftbenchError(
                f"cannot load the cross-lingual tokenizer {path!r} ({detail}); "
                "pass a local GPT-2 tokenizer directory or make 'gpt2' available in the HF cache"
            ) from exc

    def tokenize(self, text: str) -> list[str]:
        # Official: tokens = [t.lstrip("Ġ") for t in tokens] -- empty strings are kept.
        return [t.lstrip("Ġ") for t in self._tokenizer.tokenize(text)]


class _RougeL:
    """One reusable ``RougeScorer(['rougeL'])`` with memoised tokenisation and pair scores."""

    def __init__(self, tokenizer: tokenizers.Tokenizer | _GPTTokenizer) -> None:
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_MemoTokenizer(tokenizer))
        self.score = functools.lru_cache(maxsize=_PAIR_CACHE_SIZE)(self._score)

    def _score(self, prediction: str, reference: str) -> float:
        return self._scorer.score(prediction=prediction, target=reference)["rougeL"].fmeasure


@functools.cache
def _default_rouge() -> _RougeL:
    return _RougeL(tokenizers.DefaultTokenizer(use_stemmer=True))


@functools.cache
def _xlingual_rouge(path: str) -> _RougeL:
    return _RougeL(_GPTTokenizer(path))


def rouge_l(prediction: str, reference: str, xlingual_tokenizer: str | None = None) -> float:
    """ROUGE-L F-measure of ``prediction`` against ``reference``.

    Args:
        prediction: Model output.
        reference: One gold answer (the ROUGE "target").
        xlingual_tokenizer: None for the default track (rouge_score tokenizer with Porter
            stemming); otherwise a GPT-2 tokenizer name or path for the cross-lingual track.
            The tokenizer is loaded on first use and cached per path.

    Returns:
        The F-measure in [0, 1].

    Raises:
        PeftbenchError: If the cross-lingual tokenizer cannot be loaded.
    """
    scorer = _default_rouge() if xlingual_tokenizer is None else _xlingual_rouge(xlingual_tokenizer)
    return scorer.score(prediction, reference)


def max_over_references(metric_fn: Callable[[str, str], float], prediction: str, references: list[str]) -> float:
    """Best score of ``prediction`` over all references.

    Args:
        metric_fn: ``metric_fn(prediction, reference) -> float``.
        prediction: Model output.
        references: Gold answers; must be non-empty.

    Returns:
        The maximum of ``metric_fn`` over ``references``.

    Raises:
        ValueError: If ``references`` is empty.
    """
    if not references:
        raise ValueError("max_over_references needs at least one reference")
    return max(metric_fn(prediction, reference) for reference in references)


# --------------------------------------------------------------------------- aggregation


class _Sums:
    """Running sums for one group, added in record order (as the official loop does)."""

    __slots__ = ("em", "n", "rouge")

    def __init__(self) -> None:
        self.em = 0.0
        self.rouge = 0.0
        self.n = 0

    def add(self, em: float, rouge: float) -> None:
        self.em += em
        self.rouge += rouge
        self.n += 1

    def result(self) -> dict[str, Any]:
        return {
            "exact_match": round(100.0 * self.em / self.n, 4),
            "rougeL": round(100.0 * self.rouge / self.n, 4),
            "num_examples": self.n,
        }


def _check_record(record: Mapping, index: int) -> None:
    where = f"record {index}" + (f" (id {record['id']!r})" if "id" in record else "")
    for key in REQUIRED_KEYS:
        if key not in record:
            raise PeftbenchError(f"{where}: missing key {key!r}")
    refs = record["references"]
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise PeftbenchError(f"{where}: 'references' must be a non-empty list of strings")
    if record["prediction"] is not None and not isinstance(record["prediction"], str):
        raise PeftbenchError(f"{where}: prediction must be a string or null")


def score_predictions(
    records: Iterable[Mapping],
    xlingual: bool = False,
    xlingual_tokenizer: str = DEFAULT_XLINGUAL_TOKENIZER,
    progress: bool = False,
) -> dict:
    """Score predictions overall, per task and per category.

    Args:
        records: Mappings with keys ``id``, ``task``, ``prediction`` (str or None, None scores
            as the empty string), ``references`` (non-empty list of str) and optionally
            ``category`` (records without one belong to no category group).
        xlingual: Use the cross-lingual track (GPT-2 token ROUGE-L).
        xlingual_tokenizer: Tokenizer name or path for the cross-lingual track.
        progress: Show a tqdm progress bar.

    Returns:
        ``{"overall": m, "per_category": {cat: m}, "per_task": {task: m}, "track": str, "official": flat}`` where
        each ``m`` is ``{"exact_match", "rougeL", "num_examples"}``; scores are percentages
        rounded to 4 decimals and the group dicts are sorted by key.

    Raises:
        PeftbenchError: If there are no records, a record is malformed, or the cross-lingual
            tokenizer cannot be loaded.
    """
    scorer = _xlingual_rouge(xlingual_tokenizer) if xlingual else _default_rouge()
    overall = _Sums()
    per_task: dict[str, _Sums] = {}
    per_category: dict[str, _Sums] = {}
    total = len(records) if hasattr(records, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(records, total=total, desc="scoring", unit="ex", disable=not progress)
    for index, record in enumerate(bar):
        _check_record(record, index)
        prediction = record["prediction"] if record["prediction"] is not None else ""
        references = record["references"]
        em = max_over_references(exact_match, prediction, references)
        rouge = max_over_references(scorer.score, prediction, references)
        overall.add(em, rouge)
        per_task.setdefault(str(record["task"]), _Sums()).add(em, rouge)
        category = record.get("category")
        if category is not None:
            per_category.setdefault(str(category), _Sums()).add(em, rouge)
    if overall.n == 0:
        raise PeftbenchError("no predictions to score (the record list is empty)")
    result = {
        "overall": overall.result(),
        "per_category": {key: per_category[key].result() for key in sorted(per_category)},
        "per_task": {key: per_task[key].result() for key in sorted(per_task)},
        "track": "xlingual" if xlingual else "default",
    }
    result["official"] = official_keys(result)
    return result


def official_category_key(category: str) -> str:
    """A category as SuperNI's scorer names it: ``"Textual Entailment"`` -> ``"textual_entailment"``."""
    return "_".join(category.lower().split())


def official_keys(scores: Mapping) -> dict[str, float]:
    """The flat dict SuperNI's ``evaluation.py`` writes: ``exact_match``, ``rougeL``, and per task and per
    category (under its official key) ``exact_match_for_<group>`` / ``rougeL_for_<group>``."""
    flat = {"exact_match": scores["overall"]["exact_match"], "rougeL": scores["overall"]["rougeL"]}
    groups = [*scores["per_task"].items(), *((official_category_key(c), m) for c, m in scores["per_category"].items())]
    for group, m in groups:
        flat[f"exact_match_for_{group}"] = m["exact_match"]
        flat[f"rougeL_for_{group}"] = m["rougeL"]
    return flat


# --------------------------------------------------------------------------- files


def record_checksum(record: Mapping) -> str:
    """CRC-32 (8 hex digits) of a prediction line's id, prediction and references: a byte changed inside a
    line that still parses (a bit flip in the prediction text) is caught when the file is read back."""
    payload = json.dumps([record.get("id"), record.get("prediction"), record.get("references")], ensure_ascii=False)
    return f"{zlib.crc32(payload.encode('utf-8')):08x}"


def _check_line(obj: Any, where: str) -> None:
    if not isinstance(obj, dict):
        raise PeftbenchError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in REQUIRED_KEYS:
        if key not in obj:
            raise PeftbenchError(f"{where}: missing key {key!r}")
    if not isinstance(obj["id"], str) or not obj["id"]:
        raise PeftbenchError(f"{where}: 'id' must be a non-empty string")
    if not isinstance(obj["task"], str) or not obj["task"]:
        raise PeftbenchError(f"{where}: 'task' must be a non-empty string")
    if obj["prediction"] is not None and not isinstance(obj["prediction"], str):
        raise PeftbenchError(f"{where}: prediction must be a string or null")
    refs = obj["references"]
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise PeftbenchError(f"{where}: 'references' must be a non-empty list of strings")
    if obj.get("category") is not None and not isinstance(obj["category"], str):
        raise PeftbenchError(f"{where}: 'category' must be a string or null")
    if "checksum" in obj and obj["checksum"] != record_checksum(obj):
        raise PeftbenchError(f"{where}: the line does not match its checksum (changed or damaged after it was written)")


def read_predictions(path: str | Path) -> list[dict]:
    """Read a predictions JSONL file (one JSON object per line; blank lines are skipped).

    Each object needs ``id`` (unique str), ``task`` (str), ``prediction`` (str or null) and
    ``references`` (non-empty list of str); ``category`` (str or null) is optional.

    Args:
        path: The JSONL file.

    Returns:
        The records, in file order.

    Raises:
        PeftbenchError: One line naming the file (and line number) if the file is missing,
            empty, or any line is invalid or repeats an id.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PeftbenchError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PeftbenchError(f"{path}: is a directory, expected a JSONL file") from None
    except OSError as exc:
        raise PeftbenchError(f"{path}: cannot read ({exc.strerror or exc})") from None

    records: list[dict] = []
    first_seen: dict[str, int] = {}
    for lineno, line_bytes in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{lineno}"
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PeftbenchError(f"{where}: not valid UTF-8 ({exc.reason})") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PeftbenchError(f"{where}: not valid JSON ({exc.msg})") from None
        _check_line(obj, where)
        if obj["id"] in first_seen:
            raise PeftbenchError(f"{where}: duplicate id {obj['id']!r} (first seen on line {first_seen[obj['id']]})")
        first_seen[obj["id"]] = lineno
        records.append(obj)
    if not records:
        raise PeftbenchError(f"{path}: no records (the file is empty)")
    return records


def write_metrics(metrics: dict, path: str | Path) -> None:
    """Write metrics as pretty JSON, atomically (temporary file, fsync, rename; parents created).

    Args:
        metrics: JSON-serialisable metrics (e.g. from :func:`score_predictions`).
        path: Destination file.
    """
    atomic_write_json(path, metrics)
