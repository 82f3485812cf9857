"""Per-instance scores grouped by test task: the layout the report's inference works on (one array per metric or
system, instances task after task) and Holm's correction for a family of tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TaskScores", "holm"]


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
