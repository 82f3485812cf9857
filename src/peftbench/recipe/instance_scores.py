"""Per-instance scores of finished runs, for the report's intervals and paired tests.

A run's ``metrics.json`` keeps only averages; its ``predictions.jsonl`` keeps every prediction with its
references. Each instance is scored here with the official scorer (:mod:`peftbench.evaluation.metrics`:
exact match and ROUGE-L, each the maximum over the references, x100), so the mean over a run's instances is
its reported overall score. A run scores its instances when it is evaluated and keeps them in
``instance_scores.json`` beside its predictions (:func:`record_instance_scores`), keyed by the SHA-256 of the
predictions file, the scoring track and the scorer's source and ``rouge_score`` version; runs without that file (or
whose key no longer matches) are scored here and cached in ``<cache root>/instance-scores/`` under the same key
(scoring the 11,900 test instances of one run takes seconds; a study has thousands of runs).

A configuration's seeds are scored on the same test instances (``data.seed`` selects them); their per-instance
scores are averaged over seeds, which makes the mean over instances equal to the mean over seeds of the runs'
overall scores, and each seed's scores are kept too, for intervals that count the seed-to-seed variance.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from peftbench.errors import PeftbenchError
from peftbench.evaluation import metrics as official
from peftbench.evaluation.task_scores import TaskScores
from peftbench.io import atomic_write_text, cache_dir
from peftbench.recipe.runfiles import INSTANCE_SCORES_FILE, PREDICTIONS_FILE, saved_config

log = logging.getLogger(__name__)

METRICS = ("exact_match", "rougeL")
"""The metrics kept per instance, in this order (the first axis of every ``TaskScores`` built here)."""
MISMATCH_POINTS = 0.01
"""A run whose predictions re-score further than this from its metrics.json is noted in the report."""


@dataclass(frozen=True)
class RunScores:
    """One run's per-instance scores, in the order of its predictions file."""

    ids: list[str]
    tasks: list[str]
    categories: list[str | None]
    values: np.ndarray
    """Shape (len(METRICS), instances): exact match and ROUGE-L, x100."""


@dataclass(frozen=True)
class SystemScores:
    """A configuration's per-instance scores averaged over its seeds, tasks sorted, instances sorted by id."""

    tasks: list[str]
    categories: list[str | None]
    """Per task, its category (None when the predictions have none)."""
    ids: tuple[str, ...]
    """Every instance id, task after task (the instance layout of ``scores``)."""
    scores: TaskScores
    seeds: int
    per_seed: tuple[TaskScores, ...] = ()
    """Each seed's own scores, in the layout of ``scores`` (their mean is ``scores``): the report's inference counts
    training-seed variance from them (:mod:`peftbench.evaluation.inference`)."""

    def seed_task_means(self, tasks: list[int] | None = None) -> np.ndarray:
        """Shape (metrics, seeds, tasks): each seed's mean score per task (of the given tasks, default all)."""
        seeds = self.per_seed or (self.scores,)
        return np.stack([(s if tasks is None else s.subset(tasks)).task_means() for s in seeds], axis=1)

    def restricted(self, ids: set[str]) -> SystemScores:
        """The same system on a subset of its instances (tasks left empty are dropped)."""
        keep = np.array([i in ids for i in self.ids])
        spans = np.split(keep, np.cumsum(self.scores.counts)[:-1])
        tasks = [t for t, span in enumerate(spans) if span.any()]
        counts = np.array([int(spans[t].sum()) for t in tasks], dtype=np.int64)
        kept = tuple(i for i, k in zip(self.ids, keep, strict=True) if k)
        per_seed = tuple(TaskScores(s.values[:, keep], counts) for s in self.per_seed)
        return SystemScores(
            [self.tasks[t] for t in tasks],
            [self.categories[t] for t in tasks],
            kept,
            TaskScores(self.scores.values[:, keep], counts),
            self.seeds,
            per_seed,
        )


def _track(run_dir: Path, metrics: dict[str, Any]) -> str | None:
    """None for the default track, else the cross-lingual tokenizer the run was scored with."""
    if metrics.get("track") != "xlingual":
        return None
    evaluation = (saved_config(run_dir) or {}).get("eval")
    chosen = evaluation.get("xlingual_tokenizer") if isinstance(evaluation, dict) else None
    return str(chosen or official.DEFAULT_XLINGUAL_TOKENIZER)


def _cache_key(data: bytes, track: str | None) -> str:
    digest = hashlib.sha256(data)
    scorer = Path(official.__file__).read_bytes() + metadata.version("rouge-score").encode() + str(track).encode()
    digest.update(hashlib.sha256(scorer).digest())
    return digest.hexdigest()[:32]


def read_run_scores(run_dir: Path, metrics: dict[str, Any]) -> RunScores:
    """Every prediction of a finished run scored with the official scorer: the run's own ``instance_scores.json``
    when its key matches, else the cache, else scored now (and cached).

    Raises:
        PeftbenchError: One line, when ``predictions.jsonl`` is missing or malformed.
    """
    return _scores(run_dir, _track(run_dir, metrics), keep=False)


def record_instance_scores(run_dir: Path, metrics: dict[str, Any]) -> RunScores | None:
    """Scores a run's predictions now and keeps them in ``<run_dir>/instance_scores.json``, so that reports read
    them instead of scoring again (the first report of a study-sized grid otherwise spends ~0.6 s per run).

    Only saves later work: any failure is logged as a warning and returns None (the report then scores the run)."""
    try:
        return _scores(run_dir, _track(run_dir, metrics), keep=True)
    except Exception as exc:  # never fail an evaluation for a report-time shortcut
        log.warning("per-instance scores not kept (the report will compute them): %s", exc)
        return None


def _entry(path: Path, key: str, keyed: bool) -> RunScores | None:
    """The scores stored at ``path`` if they are whole and belong to ``key`` (``keyed``: the file must say so;
    else its name is the key)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        entry = json.loads(path.read_text())
        if not isinstance(entry, dict) or entry.get("key", None if keyed else key) != key:
            return None
        values = np.asarray(entry["values"], dtype=np.float64)
        if values.shape == (len(METRICS), len(entry["ids"])) == (len(METRICS), len(entry["tasks"])):
            return RunScores(entry["ids"], entry["tasks"], entry["categories"], values)
    return None


def _scores(run_dir: Path, track: str | None, keep: bool) -> RunScores:
    path = run_dir / PREDICTIONS_FILE
    try:
        data = path.read_bytes()
    except OSError:
        raise PeftbenchError(f"{path}: missing or unreadable") from None
    key = _cache_key(data, track)
    own = run_dir / INSTANCE_SCORES_FILE
    if not keep:
        cached = cache_dir() / "instance-scores" / f"{key}.json"
        found = _entry(own, key, keyed=True) or _entry(cached, key, keyed=False)
        if found is not None:
            return found
    records = official.read_predictions(path)
    rouge = official.rouge_l if track is None else lambda p, r: official.rouge_l(p, r, xlingual_tokenizer=track)
    scored = []
    for record in records:
        prediction = record["prediction"] or ""  # a missing prediction scores as the empty string
        scored.append(
            [official.max_over_references(fn, prediction, record["references"]) for fn in (official.exact_match, rouge)]
        )
    values = 100.0 * np.asarray(scored, dtype=np.float64).T.reshape(len(METRICS), len(records))
    scores = RunScores(
        [r["id"] for r in records], [r["task"] for r in records], [r.get("category") for r in records], values
    )
    entry = {
        "key": key,
        "ids": scores.ids,
        "tasks": scores.tasks,
        "categories": scores.categories,
        "values": values.tolist(),
    }
    with contextlib.suppress(OSError):  # an unwritable cache or run directory only costs the scoring next time
        atomic_write_text(own if keep else cached, json.dumps(entry, separators=(",", ":")) + "\n")
    return scores


def mismatch(scores: RunScores, metrics: dict[str, Any]) -> str | None:
    """Why a run's predictions do not reproduce its reported overall scores, or None when they do."""
    for k, name in enumerate(METRICS):
        reported = (metrics.get("overall") or {}).get(name)
        again = float(scores.values[k].mean())
        if isinstance(reported, (int, float)) and abs(again - reported) > MISMATCH_POINTS:
            return f"its predictions score {name} {again:.2f}, its metrics.json says {reported:.2f}"
    return None


def system_scores(seeds: list[RunScores]) -> tuple[SystemScores, str | None]:
    """Averages the runs of one configuration over seeds, on the instances every seed has; also says when the
    seeds' instances differ (then the mean is over the common ones only)."""
    common = set(seeds[0].ids).intersection(*(s.ids for s in seeds[1:]))
    if not common:
        raise PeftbenchError("its seeds share no test instance")
    note = None
    if any(len(s.ids) != len(common) for s in seeds):
        note = f"its seeds differ in their test instances; intervals use the {len(common)} they share"
    first = seeds[0]
    task_of = {i: (t, c) for i, t, c in zip(first.ids, first.tasks, first.categories, strict=True) if i in common}
    order = sorted(common, key=lambda i: (task_of[i][0], i))
    each = []
    for s in seeds:
        position = {i: j for j, i in enumerate(s.ids)}
        each.append(s.values[:, [position[i] for i in order]])
    per_task = Counter(task_of[i][0] for i in order)
    tasks = sorted(per_task)
    counts = np.array([per_task[t] for t in tasks], dtype=np.int64)
    category = {t: c for t, c in task_of.values()}
    per_seed = tuple(TaskScores(v, counts) for v in each)
    return SystemScores(
        tasks,
        [category[t] for t in tasks],
        tuple(order),
        TaskScores(sum(each) / len(seeds), counts),
        len(seeds),
        per_seed,
    ), note
