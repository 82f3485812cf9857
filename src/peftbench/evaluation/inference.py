"""Intervals and tests that count training-seed variance: one t procedure over test tasks and seeds.

A configuration trained with seeds ``s = 1..S`` and scored on test tasks ``t = 1..T`` gives a table of per-task
mean scores ``y[s, t]``. Its score is ``theta = mean_s sum_t w_t y[s, t]`` with ``w_t`` the task's share of the
test instances (SuperNI's overall score weights tasks by their instances). The question a report answers is about
the *method*: what it scores on tasks like these, trained with any seed. Two sources of variation stand between
the observed ``theta`` and that: which tasks happened to be in the test set, and which seeds were trained. With
``m_t = mean_s y[s, t]`` and ``theta_s = sum_t w_t y[s, t]``,

- the task part is the cluster (by task) variance of a weighted mean, ``V_T = T/(T-1) * sum_t w_t^2 (m_t - theta)^2``
  (instance noise is inside each ``m_t``, so it is counted once, not again as in a two-level bootstrap);
- the seed part is ``V_S = var_s(theta_s) / S`` (sample variance, ``S - 1`` in the denominator).

``V = V_T + V_S`` with Satterthwaite's degrees of freedom ``V^2 / (V_T^2/(T-1) + V_S^2/(S-1))``; the interval is
``theta +- t(0.975, df) sqrt(V)`` and the two-sided p-value ``2 P(|t_df| >= |theta| / sqrt(V))``. Under the crossed
model ``y = mu + task + seed + residual`` this variance is conservative by the residual's share ``V_E / S`` (both
parts contain it once); with few seeds the seed part has few degrees of freedom, and the t reference widens the
interval accordingly: validity costs power. With one seed ``V_S`` is unknown and left out: the result says so.

A difference between two configurations scored on the same tasks uses the same formulas on their difference:
``V_T`` from the per-task differences of the seed means, ``V_S = var(theta^A_s)/S_A + var(theta^B_s)/S_B`` (the two
methods' seeds are different trained models), and Satterthwaite over the three parts. The interval and the test
are one procedure, so they never disagree: the interval excludes 0 exactly when p < 1 - level.

``minimum_detectable`` gives, for the same variance and degrees of freedom, the smallest true difference found
with 80% power at a given alpha: ``(t(1 - alpha/2, df) + t(0.8, df)) sqrt(V)``. See docs/statistics.md for the
choice (Dror et al. 2018; Bouthillier et al. 2021; Card et al. 2020) and ``bench/stats_bench.py`` for coverage,
error rates and power measured on synthetic data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["Estimate", "difference", "minimum_detectable", "score"]


@dataclass(frozen=True)
class Estimate:
    """A score or a difference with its standard error, degrees of freedom and what the variance covers."""

    estimate: float
    variance_tasks: float
    variance_seeds: float
    df: float
    seeds_covered: bool
    """False with one seed (per configuration): the interval then says nothing about another seed."""
    tasks: int

    @property
    def se(self) -> float:
        return math.sqrt(self.variance_tasks + self.variance_seeds)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        if self.se == 0:
            return self.estimate, self.estimate
        half = float(stats.t.ppf((1 + level) / 2, self.df)) * self.se
        return self.estimate - half, self.estimate + half

    def p_value(self) -> float:
        """Two-sided p-value of ``estimate == 0``."""
        if self.se == 0:
            return 1.0 if self.estimate == 0 else 0.0
        return float(2 * stats.t.sf(abs(self.estimate) / self.se, self.df))

    def minimum_detectable(self, alpha: float = 0.05, power: float = 0.8) -> float:
        return minimum_detectable(self.se, self.df, alpha, power)


def minimum_detectable(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided t test at ``alpha`` finds with probability ``power``."""
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def _weights(counts: Sequence[int] | np.ndarray | None, tasks: int) -> np.ndarray:
    w = np.ones(tasks) if counts is None else np.asarray(counts, dtype=np.float64)
    if w.shape != (tasks,) or (w <= 0).any():
        raise ValueError("counts must give a positive instance count per task")
    return w / w.sum()


def _table(scores: np.ndarray) -> np.ndarray:
    y = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError("scores must be (seeds, tasks) with at least 2 tasks")
    return y


def _satterthwaite(parts: Sequence[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of variance estimates, each given as (estimate, its degrees of freedom)."""
    total = sum(v for v, _ in parts)
    denominator = sum(v * v / d for v, d in parts if d > 0 and v > 0)
    return total * total / denominator if denominator > 0 else math.inf


def _task_variance(per_task: np.ndarray, w: np.ndarray, theta: float) -> float:
    tasks = per_task.size
    return float(tasks / (tasks - 1) * np.sum(w * w * (per_task - theta) ** 2))


def score(scores: np.ndarray, counts: Sequence[int] | np.ndarray | None = None) -> Estimate:
    """A configuration's score from its per-seed, per-task mean scores (shape (seeds, tasks))."""
    y = _table(scores)
    seeds, tasks = y.shape
    w = _weights(counts, tasks)
    per_seed = y @ w
    theta = float(per_seed.mean())
    v_tasks = _task_variance(y.mean(axis=0), w, theta)
    v_seeds = float(per_seed.var(ddof=1) / seeds) if seeds > 1 else 0.0
    df = _satterthwaite([(v_tasks, tasks - 1), (v_seeds, seeds - 1)]) if seeds > 1 else tasks - 1
    return Estimate(theta, v_tasks, v_seeds, df, seeds > 1, tasks)


def difference(a: np.ndarray, b: np.ndarray, counts: Sequence[int] | np.ndarray | None = None) -> Estimate:
    """``a - b`` for two configurations scored on the same tasks (shapes (seeds_a, tasks) and (seeds_b, tasks))."""
    ya, yb = _table(a), _table(b)
    if ya.shape[1] != yb.shape[1]:
        raise ValueError("a difference needs the same tasks")
    tasks = ya.shape[1]
    w = _weights(counts, tasks)
    sa, sb = ya @ w, yb @ w
    theta = float(sa.mean() - sb.mean())
    v_tasks = _task_variance(ya.mean(axis=0) - yb.mean(axis=0), w, theta)
    parts = [(v_tasks, tasks - 1)]
    v_seeds = 0.0
    for per_seed in (sa, sb):
        if per_seed.size > 1:
            v = float(per_seed.var(ddof=1) / per_seed.size)
            v_seeds += v
            parts.append((v, per_seed.size - 1))
    covered = sa.size > 1 and sb.size > 1
    return Estimate(theta, v_tasks, v_seeds, _satterthwaite(parts) if len(parts) > 1 else tasks - 1, covered, tasks)
