"""Which differences between scores are real: a two-level bootstrap over test tasks and their instances, a
sign-flip permutation test over tasks, and Holm's correction for many comparisons.

SuperNI's overall score is the mean over every test instance (tasks weighted by their instance count). The
study generalises over *tasks* (119 unseen ones), so the bootstrap resamples tasks with replacement and, within
each drawn task, its instances with replacement, and recomputes that instance-weighted mean; percentile
intervals come from the replicates. A paired comparison of two systems scored on the same instances takes the
same draws for both (the draws depend only on the seed and the number of instances per task), so the
difference of their replicates is the bootstrap of their difference. The sign-flip test asks whether the
per-task differences could be symmetric around zero: under that null hypothesis each task's difference is as
likely to have the other sign, so the statistic is recomputed under random (or, for few tasks, all) sign flips.

Only numpy; ``tests/evaluation/test_bootstrap.py`` checks these functions against scipy's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TaskScores",
    "bootstrap_means",
    "holm",
    "percentile_interval",
    "resample_counts",
    "sign_flip_test",
]

_CHUNK_ELEMENTS = 4_000_000
"""Draws per chunk of resamples (bounds the memory of one chunk to a few hundred MB)."""
_TIE = 1e-12
"""Relative tolerance for counting a resampled statistic as extreme as the observed one (float round-off)."""


@dataclass(frozen=True)
class TaskScores:
    """Per-instance scores grouped by task: ``values[k, j]`` is metric (or system) ``k`` of instance ``j``, the
    instances listed task after task (``counts[0]`` of the first task, then the second's, ...)."""

    values: np.ndarray
    """Shape (metrics, instances), float64."""
    counts: np.ndarray
    """Shape (tasks,): instances per task, each at least 1."""

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.counts.ndim != 1 or self.values.shape[1] != self.counts.sum():
            raise ValueError("values must be (metrics, instances) with instances = counts.sum()")
        if self.counts.size == 0 or self.counts.min() < 1:
            raise ValueError("every task needs at least one instance")

    @classmethod
    def from_tasks(cls, per_task: Sequence[np.ndarray]) -> TaskScores:
        """Builds from one array per task, each of shape (metrics, instances) or (instances,) for one metric."""
        arrays = [np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in per_task]
        if not arrays:
            raise ValueError("no tasks")
        counts = np.array([a.shape[1] for a in arrays], dtype=np.int64)
        return cls(np.concatenate(arrays, axis=1), counts)

    @classmethod
    def stack(cls, systems: Sequence[TaskScores]) -> TaskScores:
        """Several systems scored on the same instances, as one (their metrics concatenated)."""
        if any(not np.array_equal(s.counts, systems[0].counts) for s in systems):
            raise ValueError("stacked systems need the same tasks and instances")
        return cls(np.concatenate([s.values for s in systems]), systems[0].counts)

    @property
    def num_tasks(self) -> int:
        return int(self.counts.size)

    @property
    def num_instances(self) -> int:
        return int(self.counts.sum())

    @property
    def offsets(self) -> np.ndarray:
        """Shape (tasks,): where each task's instances start."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def mean(self) -> np.ndarray:
        """Per metric, the mean over every instance (SuperNI's overall score)."""
        return self.values.mean(axis=1)

    def task_means(self) -> np.ndarray:
        """Shape (metrics, tasks): each task's mean over its instances."""
        return np.add.reduceat(self.values, self.offsets, axis=1) / self.counts

    def subset(self, tasks: Sequence[int]) -> TaskScores:
        """The scores of some tasks only (e.g. one category's), in the order given."""
        starts = self.offsets
        columns = np.concatenate([np.arange(starts[t], starts[t] + self.counts[t]) for t in tasks])
        return TaskScores(self.values[:, columns], self.counts[np.asarray(tasks, dtype=np.int64)])

    def minus(self, other: TaskScores) -> TaskScores:
        """Instance-wise difference with a system scored on the same instances."""
        if not np.array_equal(self.counts, other.counts) or self.values.shape != other.values.shape:
            raise ValueError("a paired difference needs the same tasks and instances")
        return TaskScores(self.values - other.values, self.counts)


def resample_counts(counts: np.ndarray, n_resamples: int, seed: int, *, instances: bool = True) -> Iterator[np.ndarray]:
    """The bootstrap resamples, as how often each instance (or task) is drawn, in chunks of resamples.

    Each resample draws as many tasks as there are, with replacement; with ``instances`` each drawn task then
    draws as many of its instances as it has, with replacement (a task drawn twice contributes two independent
    instance resamples). The draws depend only on ``counts``, ``n_resamples`` and ``seed``.

    Yields:
        Arrays of shape (resamples in the chunk, counts.sum()) with ``instances``, else (..., tasks).
    """
    rng = np.random.default_rng(seed)
    counts = np.asarray(counts, dtype=np.int64)
    tasks, total, width = counts.size, int(counts.sum()), int(counts.max())
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    chunk = max(1, _CHUNK_ELEMENTS // (tasks * (width if instances else 1)))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        drawn = rng.integers(0, tasks, size=(b, tasks))  # the tasks of each resample
        if not instances:
            rows = (np.arange(b) * tasks)[:, None]
            yield np.bincount((rows + drawn).ravel(), minlength=b * tasks).reshape(b, tasks)
            continue
        n = counts[drawn][..., None]  # (b, tasks, 1): each drawn task keeps its own instance count
        # Position p of a drawn task t picks one of t's instances uniformly; positions p >= counts[t] are padding
        # and go to a spare bin (index `total`) that is dropped. u < 1 has 24 bits, so u * n < n exactly in float64.
        picks = (rng.random((b, tasks, width), dtype=np.float32) * n).astype(np.int64)
        flat = np.where(np.arange(width) < n, offsets[drawn][..., None] + picks, total)
        flat += (np.arange(b) * (total + 1))[:, None, None]
        yield np.bincount(flat.ravel(), minlength=b * (total + 1)).reshape(b, total + 1)[:, :total]


def bootstrap_means(scores: TaskScores, n_resamples: int, seed: int, *, instances: bool = True) -> np.ndarray:
    """Bootstrap replicates of the instance-weighted mean over the resamples of :func:`resample_counts` (the
    two-level bootstrap; ``instances=False`` resamples tasks only, each drawn task with all its instances).

    Systems scored on the same instances get the same draws (stack them to draw once), so the difference of two
    systems' replicates is a paired bootstrap of their difference.

    Returns:
        Shape (n_resamples, metrics).
    """
    values = scores.values if instances else np.add.reduceat(scores.values, scores.offsets, axis=1)
    sizes = np.ones(scores.num_instances) if instances else scores.counts.astype(np.float64)
    replicates = np.empty((n_resamples, values.shape[0]))
    start = 0
    for drawn in resample_counts(scores.counts, n_resamples, seed, instances=instances):
        replicates[start : start + len(drawn)] = (drawn @ values.T) / (drawn @ sizes)[:, None]
        start += len(drawn)
    return replicates


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The percentile bootstrap interval: the (1 - level)/2 and (1 + level)/2 quantiles of the replicates
    (along axis 0, linear interpolation as ``numpy.percentile`` and ``scipy.stats.bootstrap`` use)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level}")
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail], axis=0)
    return low, high


def sign_flip_test(
    differences: np.ndarray, weights: np.ndarray | None = None, n_resamples: int = 10_000, seed: int = 0
) -> np.ndarray:
    """Two-sided paired permutation test over tasks.

    The statistic is ``sum(weights * differences)`` (with weights = instances per task / all instances and
    differences = per-task mean differences, this is the difference of the two overall scores). Under the null
    hypothesis the two systems are exchangeable within each task, so every task's difference may flip its sign.
    All ``2**tasks`` sign patterns are enumerated when there are at most ``n_resamples`` of them (an exact
    test); otherwise ``n_resamples`` random patterns are drawn and p = (1 + extreme) / (1 + n_resamples).

    Args:
        differences: Shape (tasks,), or (tests, tasks) for several tests on the same tasks (same patterns).
        weights: Shape (tasks,); default equal weights.
        n_resamples: Sign patterns drawn when not enumerating all of them.
        seed: Seed of the generator for the random patterns.

    Returns:
        The p-value (shape () or (tests,)): the share of sign patterns whose |statistic| is at least the observed.
    """
    d = np.asarray(differences, dtype=np.float64)
    tasks = d.shape[-1]
    w = np.ones(tasks) if weights is None else np.asarray(weights, dtype=np.float64)
    contributions = (w * d).T  # (tasks,) or (tasks, tests)
    observed = np.abs(contributions.sum(axis=0))
    threshold = observed - _TIE * np.maximum(observed, np.abs(contributions).sum(axis=0))
    if tasks == 0:
        return np.ones_like(observed)
    if 2**tasks <= n_resamples:
        patterns = np.arange(2**tasks)[:, None] >> np.arange(tasks) & 1  # every sign pattern, the identity first
        return np.mean(np.abs((1.0 - 2 * patterns) @ contributions) >= threshold, axis=0)
    rng = np.random.default_rng(seed)
    extreme = np.zeros_like(observed)
    chunk = max(1, _CHUNK_ELEMENTS // tasks)
    for start in range(0, n_resamples, chunk):
        flips = rng.integers(0, 2, size=(min(chunk, n_resamples - start), tasks), dtype=np.int8)
        extreme += np.count_nonzero(np.abs((1.0 - 2.0 * flips) @ contributions) >= threshold, axis=0)
    return (1 + extreme) / (1 + n_resamples)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (controls the family-wise error rate; no independence assumed).

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) * p_(j)); a hypothesis is
    rejected at level alpha when its adjusted p-value is at most alpha.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted
