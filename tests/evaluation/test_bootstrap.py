"""The report's statistics (peftbench.evaluation.bootstrap): checked against independent implementations (scipy's
bootstrap and permutation test, the two-level bootstrap's variance formula, a textbook Holm example) and on
synthetic scores with known structure: a planted margin is found, equal systems are not (at about the nominal
rate), intervals shrink as tasks are added."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from peftbench.evaluation.bootstrap import (
    TaskScores,
    bootstrap_means,
    holm,
    percentile_interval,
    resample_counts,
    sign_flip_test,
)


def _scores(rng: np.random.Generator, difficulty: np.ndarray, instances: int | np.ndarray, effect: float = 0.0,
            interaction: float = 3.0, noise: float = 20.0) -> TaskScores:  # fmt: skip
    """A system on tasks of the given difficulties: score = difficulty + effect + task x system interaction + noise,
    clipped to [0, 100] as ROUGE-L is."""
    counts = np.broadcast_to(instances, difficulty.shape)
    per_task = [
        np.clip(d + effect + rng.normal(0, interaction) + rng.normal(0, noise, n), 0, 100)
        for d, n in zip(difficulty, counts, strict=True)
    ]
    return TaskScores.from_tasks(per_task)


def _pair(seed: int, tasks: int, instances: int, margin: float) -> tuple[TaskScores, TaskScores]:
    """Two systems on the same tasks; the second better by ``margin`` points (0: the same distribution)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(20, 70, tasks)
    return _scores(rng, difficulty, instances), _scores(rng, difficulty, instances, effect=margin)


# ------------------------------------------------------------------------------------------------ references


def test_task_level_bootstrap_matches_scipy():
    """One level (tasks only) is what scipy.stats.bootstrap does with the tasks as paired observations."""
    rng = np.random.default_rng(0)
    scores = _scores(rng, rng.uniform(20, 70, 25), rng.integers(5, 40, 25))
    sums, counts = np.add.reduceat(scores.values[0], scores.offsets), scores.counts.astype(float)

    def overall(s, n, axis=-1):  # SuperNI's overall: instances weighted, i.e. tasks weighted by their counts
        return s.sum(axis=axis) / n.sum(axis=axis)

    reference = stats.bootstrap((sums, counts), overall, paired=True, vectorized=True, n_resamples=20_000,
                                method="percentile", confidence_level=0.95, rng=np.random.default_rng(1))  # fmt: skip
    ours = bootstrap_means(scores, 20_000, seed=2, instances=False)[:, 0]
    low, high = percentile_interval(ours, 0.95)
    width = reference.confidence_interval.high - reference.confidence_interval.low
    assert abs(low - reference.confidence_interval.low) < 0.04 * width
    assert abs(high - reference.confidence_interval.high) < 0.04 * width
    assert ours.std(ddof=1) == pytest.approx(reference.standard_error, rel=0.03)
    assert np.mean(ours) == pytest.approx(scores.mean()[0], abs=0.02 * width)


def test_two_level_variance_matches_its_formula():
    """With n instances in each of T tasks, a replicate is the mean of T independent draws of (a task, then the
    mean of n of its instances), so its variance is (between-task variance + mean within-task variance / n) / T."""
    rng = np.random.default_rng(3)
    tasks, n = 30, 12
    scores = _scores(rng, rng.uniform(20, 70, tasks), n)
    per_task = scores.values[0].reshape(tasks, n)
    expected = (per_task.mean(axis=1).var() + per_task.var(axis=1).mean() / n) / tasks
    replicates = bootstrap_means(scores, 8000, seed=4)[:, 0]
    assert replicates.var() == pytest.approx(expected, rel=0.08)  # the variance of 8000 draws is within ~1.6%x3
    assert replicates.mean() == pytest.approx(scores.mean()[0], abs=3 * np.sqrt(expected / 8000))


def test_resamples_draw_tasks_then_their_instances():
    counts = np.array([1, 4, 7])
    draws = np.concatenate(list(resample_counts(counts, 3000, seed=5)))
    per_task = np.add.reduceat(draws, [0, 1, 5], axis=1)
    assert np.all(per_task % counts == 0)  # a drawn task brings exactly its count of instance draws, each time
    assert (per_task // counts).sum(axis=1).tolist() == [3] * 3000  # as many tasks drawn as there are
    assert draws.mean(axis=0) == pytest.approx(np.ones(12), abs=0.1)  # every instance once per resample on average


def test_sign_flip_test_matches_scipy_exactly_for_few_tasks():
    rng = np.random.default_rng(6)
    first, second = rng.normal(40, 10, 10), rng.normal(44, 10, 10)
    weights = rng.integers(20, 100, 10) / 500

    def statistic(x, y, axis=-1):
        return np.sum(weights * (x - y), axis=axis)

    reference = stats.permutation_test((first, second), statistic, permutation_type="samples", vectorized=True,
                                       n_resamples=np.inf, alternative="two-sided")  # fmt: skip
    ours = sign_flip_test(first - second, weights, n_resamples=10_000)  # 2**10 patterns: enumerated
    assert ours == pytest.approx(reference.pvalue, abs=1e-12)
    assert 0.001 < ours < 0.999


def test_sign_flip_test_matches_scipy_by_monte_carlo_for_many_tasks():
    rng = np.random.default_rng(7)
    first = rng.normal(40, 10, 40)
    second = first + rng.normal(2.0, 6, 40)

    def statistic(x, y, axis=-1):
        return np.mean(x - y, axis=axis)

    reference = stats.permutation_test((first, second), statistic, permutation_type="samples", vectorized=True,
                                       n_resamples=40_000, alternative="two-sided",
                                       rng=np.random.default_rng(8))  # fmt: skip
    ours = sign_flip_test(first - second, n_resamples=40_000, seed=9)
    assert 0.005 < reference.pvalue < 0.5  # a p-value where Monte Carlo error is visible
    assert ours == pytest.approx(reference.pvalue, abs=0.01)


def test_holm_on_the_textbook_example():
    """Holm's procedure on four p-values (the worked example of the Holm-Bonferroni method, e.g. Wikipedia):
    sorted 0.005, 0.01, 0.03, 0.04 against 0.05/4, 0.05/3, 0.05/2, 0.05/1 rejects the first two only."""
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert (adjusted <= 0.05).tolist() == [True, False, False, True]
    assert holm([0.5]).tolist() == [0.5] and holm([0.3, 0.4]).tolist() == [0.6, 0.6] and holm([]).size == 0


# ------------------------------------------------------------------------------------------ known structure


def test_a_planted_margin_is_found():
    worse, better = _pair(seed=10, tasks=40, instances=20, margin=5.0)
    diff = better.minus(worse)
    p = sign_flip_test(diff.task_means()[0], diff.counts / diff.num_instances)
    low, high = percentile_interval(bootstrap_means(diff, 1000, seed=0))
    assert p < 0.01
    assert 0 < low[0] < 5.0 < high[0]


def test_equal_systems_are_found_different_at_about_the_nominal_rate():
    """Over 200 independent null data sets (both systems from the same distribution), the sign-flip test at 5%
    rejects about 5% of the time: the count must lie in the central 99.7% of Binomial(200, 0.05), [2, 20]; the
    bootstrap interval of the difference excludes zero no more often; Holm keeps the family-wise error (6
    comparisons among 4 equal systems) at most about 5%."""
    rejected = excluded = family_errors = 0
    for seed in range(200):
        a, b = _pair(seed, tasks=12, instances=10, margin=0.0)
        diff = a.minus(b)
        p = sign_flip_test(diff.task_means()[0], diff.counts / diff.num_instances)  # 4096 patterns: exact
        rejected += p <= 0.05
        low, high = percentile_interval(bootstrap_means(diff, 400, seed=seed))
        excluded += not low[0] <= 0 <= high[0]
        rng = np.random.default_rng(10_000 + seed)
        difficulty = rng.uniform(20, 70, 12)
        systems = [_scores(rng, difficulty, 10) for _ in range(4)]
        pvalues = []
        for i in range(4):
            for j in range(i + 1, 4):
                d = systems[i].minus(systems[j])
                pvalues.append(sign_flip_test(d.task_means()[0], d.counts / d.num_instances))
        family_errors += bool((holm(pvalues) <= 0.05).any())
    assert 2 <= rejected <= 20, rejected
    assert excluded <= 20, excluded
    assert family_errors <= 20, family_errors


def test_intervals_shrink_as_tasks_are_added():
    widths = []
    for tasks in (10, 40, 160):
        scores, _ = _pair(seed=11, tasks=tasks, instances=20, margin=0.0)
        low, high = percentile_interval(bootstrap_means(scores, 1000, seed=0))
        widths.append(high[0] - low[0])
    assert widths[0] > widths[1] > widths[2] > 0
    assert 0.3 < widths[1] / widths[0] < 0.75 and 0.3 < widths[2] / widths[1] < 0.75  # about 1/sqrt(4)


# ----------------------------------------------------------------------------------------------- mechanics


def test_stacked_systems_share_the_draws_so_differences_are_paired():
    a, b = _pair(seed=12, tasks=9, instances=np.arange(3, 12), margin=2.0)
    together = bootstrap_means(TaskScores.stack([a, b]), 300, seed=13)
    assert together[:, :1] == pytest.approx(bootstrap_means(a, 300, seed=13), rel=1e-12)
    assert together[:, 1] - together[:, 0] == pytest.approx(bootstrap_means(b.minus(a), 300, seed=13)[:, 0])


def test_a_single_task_still_has_an_interval_and_a_p_value():
    scores = TaskScores.from_tasks([np.array([10.0, 20.0, 60.0, 90.0])])
    low, high = percentile_interval(bootstrap_means(scores, 500, seed=0))
    assert low[0] < scores.mean()[0] < high[0]  # instances still vary
    assert sign_flip_test(np.array([5.0])) == 1.0  # with one task, no difference can be significant
    assert sign_flip_test(np.zeros(3)) == 1.0


def test_subset_and_task_means():
    scores = TaskScores.from_tasks([np.array([[1.0], [2.0]]), np.array([[3.0, 5.0], [4.0, 6.0]])])
    assert scores.mean().tolist() == [3.0, 4.0]  # instances weighted: (1 + 3 + 5) / 3
    assert scores.task_means().tolist() == [[1.0, 4.0], [2.0, 5.0]]
    assert scores.subset([1]).values.tolist() == [[3.0, 5.0], [4.0, 6.0]]
    with pytest.raises(ValueError):
        scores.minus(scores.subset([1]))


def test_several_sign_flip_tests_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(14)
    for tasks in (8, 30):  # exact, then Monte Carlo (the same patterns for every test)
        differences = rng.normal(0.5, 2, (3, tasks))
        together = sign_flip_test(differences, n_resamples=5000, seed=15)
        assert together.tolist() == [sign_flip_test(d, n_resamples=5000, seed=15) for d in differences]
