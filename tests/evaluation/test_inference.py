"""The report's inference over test tasks and training seeds (peftbench.evaluation.inference).

Checked against scipy where the design reduces to a textbook test (one seed: a one-sample or paired t test over
tasks), and on synthetic studies with known truth, next to three deliberately wrong designs that the same checks
must reject: an instance-level test (treats every instance as independent), a bootstrap that ignores tasks
(resamples instances), and a task-level analysis that ignores the seed-to-seed variance (the earlier report).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from peftbench.evaluation.inference import difference, minimum_detectable, score
from peftbench.evaluation.task_scores import holm

INSTANCES = 50


def test_one_seed_is_the_one_sample_t_interval_over_tasks():
    rng = np.random.default_rng(0)
    task_means = rng.normal(40, 10, 12)
    e = score(task_means[None, :])
    reference = stats.ttest_1samp(task_means, 0.0)
    low, high = reference.confidence_interval(0.95)
    assert e.estimate == pytest.approx(task_means.mean())
    assert e.interval() == pytest.approx((low, high), rel=1e-9)
    assert e.p_value() == pytest.approx(reference.pvalue, rel=1e-9) and e.df == 11 and not e.seeds_covered


def test_one_seed_difference_is_the_paired_t_test_over_tasks():
    rng = np.random.default_rng(1)
    a, b = rng.normal(40, 10, 15), rng.normal(41, 10, 15)
    e = difference(a[None, :], b[None, :])
    reference = stats.ttest_rel(a, b)
    assert e.p_value() == pytest.approx(reference.pvalue, rel=1e-9)
    assert e.interval() == pytest.approx(reference.confidence_interval(0.95), rel=1e-9)


def test_weighted_tasks_give_the_instance_weighted_mean_and_interval_and_test_agree():
    rng = np.random.default_rng(2)
    counts = rng.integers(5, 100, 20)
    seeds = rng.normal(30, 8, (3, 20))
    e = score(seeds, counts)
    assert e.estimate == pytest.approx(float(np.mean(seeds @ (counts / counts.sum()))))
    for shift in np.linspace(-10, 10, 41):  # one statistic: the interval excludes 0 exactly when p < 0.05
        d = difference(seeds + shift, seeds[::-1] + rng.normal(0, 0.3, (3, 20)), counts)
        low, high = d.interval()
        assert (low > 0 or high < 0) == (d.p_value() < 0.05)


def test_seed_variance_widens_the_interval_and_one_seed_says_it_is_not_covered():
    tasks = np.linspace(20, 60, 30)
    calm = score(np.stack([tasks, tasks + 0.01, tasks - 0.01]))
    noisy = score(np.stack([tasks, tasks + 3.0, tasks - 3.0]))
    assert noisy.se > calm.se and noisy.df < calm.df and noisy.seeds_covered
    assert not score(tasks[None, :]).seeds_covered


def test_minimum_detectable_difference_matches_the_power_of_the_t_test():
    se, df = 0.6, 40
    mdd = minimum_detectable(se, df)
    # the noncentral t: power at that difference is 80% (up to the usual normal approximation of the lower tail)
    power = stats.nct.sf(stats.t.ppf(0.975, df), df, mdd / se) + stats.nct.cdf(-stats.t.ppf(0.975, df), df, mdd / se)
    assert power == pytest.approx(0.8, abs=0.01)


# --------------------------------------------------------------------------------------------------
# Synthetic studies: the procedure against wrong designs


def _study(rng, tasks: int, seeds: int, seed_sd: float, delta: float = 0.0, methods: int = 2):
    """Per-instance scores: (method, seed, task, instance); method 0's truth is 40 + delta, the others' 40."""
    task = rng.normal(0, 15, (1, 1, tasks, 1))
    instance = rng.normal(0, 14, (1, 1, tasks, INSTANCES))  # shared by the methods: the same instances
    interaction = rng.normal(0, 3, (methods, 1, tasks, 1))
    offsets = rng.normal(0, seed_sd, (methods, seeds, 1, 1))
    own = rng.normal(0, 14, (methods, seeds, tasks, INSTANCES))
    y = 40 + task + instance + interaction + offsets + own
    y[0] += delta
    return y


def ours(y) -> float:
    return difference(y[0].mean(axis=-1), y[1].mean(axis=-1)).p_value()


def ignores_seeds(y) -> float:
    """The earlier report: seeds averaged first, variance over tasks only."""
    return difference(y[0].mean(axis=(0, -1))[None, :], y[1].mean(axis=(0, -1))[None, :]).p_value()


def instance_level(y) -> float:
    """Every instance an independent observation (a paired t test over instances of the seed-averaged scores)."""
    return float(stats.ttest_rel(y[0].mean(axis=0).ravel(), y[1].mean(axis=0).ravel()).pvalue)


def instance_bootstrap(y, rng) -> float:
    """A bootstrap over instances that ignores tasks (the percentile interval, turned into a test)."""
    d = (y[0].mean(axis=0) - y[1].mean(axis=0)).ravel()
    draws = d[rng.integers(0, d.size, (400, d.size))].mean(axis=1)
    return float(2 * min((draws <= 0).mean(), (draws >= 0).mean()))


def _rejections(procedure, rng, reps: int, **study) -> float:
    return float(np.mean([procedure(_study(rng, **study)) <= 0.05 for _ in range(reps)]))


@pytest.mark.parametrize("seed_sd", [0.0, 1.0])
def test_equal_methods_are_called_different_at_most_at_the_nominal_rate_and_the_wrong_designs_are_caught(seed_sd):
    rng = np.random.default_rng(7 + int(seed_sd))
    reps, design = 400, {"tasks": 40, "seeds": 3, "seed_sd": seed_sd}
    rate = _rejections(ours, rng, reps, **design)
    assert rate <= 0.09, f"seeds+tasks: {rate}"  # 5% nominal; 400 studies: sd 1.1 points
    # The same check fails each wrong design, so it can fail:
    assert _rejections(instance_level, rng, reps, **design) > 0.25  # instances are not independent
    assert _rejections(lambda y: instance_bootstrap(y, rng), rng, reps, **design) > 0.25
    if seed_sd > 0:
        assert _rejections(ignores_seeds, rng, reps, **design) > 0.12  # seed variance left out (nominal 0.05)


def test_the_interval_covers_the_truth_with_few_tasks():
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(400):
        y = _study(rng, tasks=12, seeds=3, seed_sd=0.5)[1]  # method B, truth 40
        low, high = score(y.mean(axis=-1)).interval()
        hits += low <= 40 <= high
    assert 0.90 <= hits / 400 <= 0.99


def test_family_wise_error_of_six_equal_methods_after_holm():
    rng = np.random.default_rng(13)
    wrong = 0
    for _ in range(200):
        means = _study(rng, tasks=40, seeds=3, seed_sd=0.5, methods=6).mean(axis=-1)
        p = [difference(means[i], means[j]).p_value() for i in range(6) for j in range(i + 1, 6)]
        wrong += bool((holm(p) <= 0.05).any())
    assert wrong / 200 <= 0.10


def test_a_real_difference_is_found():
    rng = np.random.default_rng(17)
    assert _rejections(ours, rng, 200, tasks=60, seeds=3, seed_sd=0.5, delta=4.0) >= 0.8
