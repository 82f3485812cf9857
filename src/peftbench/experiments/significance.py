"""Which differences are real: bootstrap intervals for every configuration, per category for the best one of each
method, and paired tests between the best configurations of every two methods (see docs/statistics.md).

Every interval comes from the same two-level bootstrap (:mod:`peftbench.evaluation.bootstrap`): test tasks
resampled with replacement, then each drawn task's instances, with the configuration's per-instance scores
averaged over its seeds. Configurations scored on the same test instances share the draws, so the difference of
two configurations' replicates is their paired difference. p-values come from a sign-flip permutation test over
tasks, with Holm's correction over the comparisons of the table (per metric).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from peftbench.errors import PeftbenchError
from peftbench.evaluation.bootstrap import TaskScores, bootstrap_means, holm, percentile_interval, sign_flip_test
from peftbench.experiments.analysis import Configuration
from peftbench.experiments.instance_scores import METRICS, SystemScores, mismatch, read_run_scores, system_scores
from peftbench.experiments.rundir import PREDICTIONS_FILE

LEVEL = 0.95
"""Coverage of every interval."""
ALPHA = 0.05
"""A difference is called real when its Holm-adjusted ROUGE-L p-value is at most this."""
PERMUTATIONS = 10_000
"""Random sign patterns of the paired test when there are more than this many (2**tasks); else all of them."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float

    def text(self) -> str:
        return f"[{self.low:.2f}, {self.high:.2f}]"


@dataclass(frozen=True)
class Comparison:
    """The best configurations of two methods on the instances both were scored on (first: the higher test ROUGE-L
    on all its instances)."""

    first: Configuration
    second: Configuration
    tasks: int
    instances: int
    difference: dict[str, Interval]
    """Per metric, first minus second (points)."""
    p: dict[str, float]
    """Per metric, the two-sided sign-flip p-value over tasks."""
    holm: dict[str, float] = field(default_factory=dict)
    """Per metric, the p-value after Holm's correction over every comparison of the report."""

    @property
    def real(self) -> bool:
        return self.holm["rougeL"] <= ALPHA

    @property
    def verdict(self) -> str:
        if not self.real:
            return "not distinguishable"
        if self.difference["rougeL"].estimate < 0:  # possible only when compared on a subset of the instances
            return f"{self.second.method} > {self.first.method}"
        return f"{self.first.method} > {self.second.method}"


@dataclass
class Significance:
    """Everything the report shows about uncertainty."""

    resamples: int
    seed: int
    intervals: dict[str, dict[str, Interval]] = field(default_factory=dict)
    """Configuration key -> metric -> interval of its test score."""
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Configuration key -> (test tasks, test instances) behind its interval."""
    categories: dict[str, dict[str, dict[str, Interval]]] = field(default_factory=dict)
    """Method and model (``Configuration.system``) -> category -> metric -> interval, for each best configuration."""
    category_tasks: dict[str, int] = field(default_factory=dict)
    """Category -> its number of test tasks."""
    comparisons: list[Comparison] = field(default_factory=list)
    exact_tests: bool = True
    """Whether every sign-flip test enumerated all sign patterns."""
    notes: list[str] = field(default_factory=list)


def _intervals(replicates: np.ndarray, estimates: np.ndarray) -> dict[str, Interval]:
    low, high = percentile_interval(replicates, LEVEL)
    return {m: Interval(float(estimates[k]), float(low[k]), float(high[k])) for k, m in enumerate(METRICS)}


def _load(configs: list[Configuration], root: Path, notes: list[str]) -> dict[str, SystemScores]:
    systems: dict[str, SystemScores] = {}
    missing = []
    for c in configs:
        if any(not (root / m["_dir"] / PREDICTIONS_FILE).is_file() for m in c.runs):
            missing.append(f"{c.system} {c.label}")
            continue
        try:
            runs = []
            for m in c.runs:
                scores = read_run_scores(root / m["_dir"], m)
                if (why := mismatch(scores, m)) is not None:
                    notes.append(f"{m['_dir']}: {why}; its intervals follow the predictions")
                runs.append(scores)
            systems[c.key], note = system_scores(runs)
        except PeftbenchError as exc:
            notes.append(f"{c.system} {c.label}: no intervals ({exc})")
            continue
        if note:
            notes.append(f"{c.system} {c.label}: {note}")
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        notes.append(f"{len(missing)} of {len(configs)} configurations have a run without {PREDICTIONS_FILE}, so no "
                     f"intervals: {shown}")  # fmt: skip
    return systems


def _groups(keys: list[str], systems: dict[str, SystemScores]) -> list[list[str]]:
    """Configurations grouped by their test instances (those of one group share bootstrap draws)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for key in keys:
        groups.setdefault(systems[key].ids, []).append(key)
    return list(groups.values())


def analyse(configs: list[Configuration], chosen: dict[str, Configuration], root: Path, resamples: int,
            seed: int) -> Significance:  # fmt: skip
    """Intervals for every configuration, per category for the chosen ones, and paired comparisons of the chosen
    ones (every pair of methods on the same base model), from the runs' predictions below ``root``."""
    result = Significance(resamples, seed)
    systems = _load(configs, root, result.notes)
    replicates: dict[str, np.ndarray] = {}
    for group in _groups(list(systems), systems):
        stacked = TaskScores.stack([systems[k].scores for k in group])
        draws = bootstrap_means(stacked, resamples, seed)
        for i, key in enumerate(group):
            replicates[key] = draws[:, len(METRICS) * i : len(METRICS) * (i + 1)]
            result.intervals[key] = _intervals(replicates[key], systems[key].scores.mean())
            result.sizes[key] = (systems[key].scores.num_tasks, systems[key].scores.num_instances)

    best = {method: c for method, c in chosen.items() if c.key in systems}
    for group in _groups([c.key for c in best.values()], systems):
        first = systems[group[0]]
        for category in sorted({c for c in first.categories if c is not None}):
            tasks = [t for t, c in enumerate(first.categories) if c == category]
            result.category_tasks[category] = len(tasks)
            stacked = TaskScores.stack([systems[k].scores.subset(tasks) for k in group])
            draws = bootstrap_means(stacked, resamples, seed)
            for i, key in enumerate(group):
                method = next(m for m, c in best.items() if c.key == key)
                estimates = systems[key].scores.subset(tasks).mean()
                own = draws[:, len(METRICS) * i : len(METRICS) * (i + 1)]
                result.categories.setdefault(method, {})[category] = _intervals(own, estimates)

    ranked = sorted(best.values(), key=lambda c: (-result.intervals[c.key]["rougeL"].estimate, c.method))
    for a, b in itertools.combinations(ranked, 2):
        if a.model_label != b.model_label:  # methods are compared on one base model, never across models
            continue
        comparison = _compare(a, b, systems, replicates, result)
        if comparison is not None:
            result.comparisons.append(comparison)
    result.comparisons.sort(key=lambda c: "full" not in (c.first.method, c.second.method))  # stable: rank order
    for metric in METRICS:
        for c, adjusted in zip(result.comparisons, holm([c.p[metric] for c in result.comparisons]), strict=True):
            c.holm[metric] = float(adjusted)
    return result


def _compare(a: Configuration, b: Configuration, systems: dict[str, SystemScores], replicates: dict[str, np.ndarray],
             result: Significance) -> Comparison | None:  # fmt: skip
    sa, sb = systems[a.key], systems[b.key]
    if sa.ids == sb.ids:
        draws = replicates[a.key] - replicates[b.key]
    else:
        common = set(sa.ids) & set(sb.ids)
        if not common:
            result.notes.append(f"{a.method} vs {b.method} ({a.model_label}): no test instance in common, not compared")
            return None
        sa, sb = sa.restricted(common), sb.restricted(common)
        result.notes.append(
            f"{a.method} vs {b.method} ({a.model_label}): compared on the {len(common)} test instances both have"
        )
        stacked = bootstrap_means(TaskScores.stack([sa.scores, sb.scores]), result.resamples, result.seed)
        draws = stacked[:, : len(METRICS)] - stacked[:, len(METRICS) :]
    diff = sa.scores.minus(sb.scores)
    weights = diff.counts / diff.num_instances
    per_task = diff.task_means()
    result.exact_tests &= 2**diff.num_tasks <= PERMUTATIONS
    p = dict(zip(METRICS, map(float, sign_flip_test(per_task, weights, PERMUTATIONS, result.seed)), strict=True))
    return Comparison(a, b, diff.num_tasks, diff.num_instances, _intervals(draws, diff.mean()), p)


# --------------------------------------------------------------------------------------------------
# Tables and text


def interval_texts(sig: Significance | None) -> dict[str, tuple[str, str]]:
    """Configuration key -> its ROUGE-L and exact-match intervals as "[low, high]", for the tables."""
    return {k: (iv["rougeL"].text(), iv["exact_match"].text()) for k, iv in sig.intervals.items()} if sig else {}


def best_bounds(sig: Significance | None, chosen: dict[str, Configuration]) -> dict[str, tuple[float, float]]:
    """``Configuration.system`` -> the ROUGE-L interval of its best configuration, for the params plot's bars."""
    if sig is None:
        return {}
    return {m: (sig.intervals[c.key]["rougeL"].low, sig.intervals[c.key]["rougeL"].high)
            for m, c in chosen.items() if c.key in sig.intervals}  # fmt: skip


def category_bounds(sig: Significance | None) -> dict[str, dict[str, tuple[float, float]]]:
    """``Configuration.system`` -> category -> ROUGE-L interval, for the bars of the per-category plot."""
    if sig is None:
        return {}
    return {m: {c: (iv["rougeL"].low, iv["rougeL"].high) for c, iv in per.items()} for m, per in sig.categories.items()}


def interval_columns(sig: Significance | None, key: str) -> list[str]:
    """CSV cells for one configuration: test tasks, instances, ROUGE-L low/high, EM low/high (empty if none)."""
    if sig is None or key not in sig.intervals:
        return [""] * 6
    iv = sig.intervals[key]
    return [*map(str, sig.sizes[key]), *(f"{x:.4f}" for m in ("rougeL", "exact_match")
                                          for x in (iv[m].low, iv[m].high))]  # fmt: skip


INTERVAL_HEADER = ["test tasks", "test instances", "ROUGE-L 95% low", "ROUGE-L 95% high", "EM 95% low", "EM 95% high"]


def differences_table(sig: Significance) -> tuple[list[str], list[list[str]]]:
    """The "Which differences are real" table: one row per pair of methods on one base model (their best
    configurations)."""
    header = ["model", "comparison", "tasks", "Δ ROUGE-L", "95% CI", "p", "p (Holm)", "verdict", "Δ EM", "95% CI (EM)",
              "p (Holm, EM)"]  # fmt: skip
    rows = []
    for c in sig.comparisons:
        r, e = c.difference["rougeL"], c.difference["exact_match"]
        rows.append([c.first.model_label, f"{c.first.method} − {c.second.method}", str(c.tasks),
                     f"{r.estimate:+.2f}", r.text(), _p(c.p["rougeL"]), _p(c.holm["rougeL"]), c.verdict,
                     f"{e.estimate:+.2f}", e.text(), _p(c.holm["exact_match"])])  # fmt: skip
    return header, rows


def differences_csv_rows(sig: Significance) -> tuple[list[str], list[list[str]]]:
    """Every number of the comparisons, for ``report_differences.csv``."""
    header = ["model", "first", "first configuration", "second", "second configuration", "tasks", "instances"]
    for m in ("rougeL", "exact_match"):
        header += [f"{m} difference", f"{m} 95% low", f"{m} 95% high", f"{m} p", f"{m} p holm"]
    header += ["verdict"]
    rows = []
    for c in sig.comparisons:
        row = [c.first.model_label, c.first.method, c.first.label, c.second.method, c.second.label, str(c.tasks),
               str(c.instances)]  # fmt: skip
        for m in ("rougeL", "exact_match"):
            d = c.difference[m]
            row += [f"{d.estimate:.4f}", f"{d.low:.4f}", f"{d.high:.4f}", f"{c.p[m]:.6g}", f"{c.holm[m]:.6g}"]
        rows.append([*row, c.verdict])
    return header, rows


def categories_csv_rows(sig: Significance, chosen: dict[str, Configuration]) -> tuple[list[str], list[list[str]]]:
    """Per category intervals of each method's best configuration, for ``report_categories.csv``."""
    header = ["model", "method", "configuration", "category", "test tasks", "ROUGE-L", "ROUGE-L 95% low",
              "ROUGE-L 95% high", "EM", "EM 95% low", "EM 95% high"]  # fmt: skip
    rows = []
    for system in sorted(sig.categories):
        c = chosen[system]
        for category, iv in sig.categories[system].items():
            row = [c.model_label, c.method, c.label, category, str(sig.category_tasks[category])]
            for m in ("rougeL", "exact_match"):
                row += [f"{iv[m].estimate:.4f}", f"{iv[m].low:.4f}", f"{iv[m].high:.4f}"]
            rows.append(row)
    return header, rows


def _p(value: float) -> str:
    if value < 0.001:
        return "<0.001"
    return f"{value:.4f}" if value < 0.01 else f"{value:.3f}"


def explanation(sig: Significance, on_test: bool) -> str:
    """The paragraph above the table: what the numbers are, how they were computed."""
    tasks = sorted({c.tasks for c in sig.comparisons})
    test = (
        "exact sign-flip tests (all 2^tasks sign patterns)"
        if sig.exact_tests
        else (f"sign-flip tests over tasks ({PERMUTATIONS:,} random sign patterns, exact when 2^tasks is fewer)")
    )
    text = (
        f"Paired comparisons of the best configuration of every two methods on the same test instances "
        f"({'/'.join(map(str, tasks))} tasks). Δ = first − second in points (per-instance scores averaged over seeds, "
        f"then over instances, as the overall score). 95% CI: two-level bootstrap ({sig.resamples:,} resamples of the "
        f"test tasks and of the instances within each, seed {sig.seed}; percentile intervals). p: two-sided {test}. "
        f"p (Holm): Holm's correction over the {len(sig.comparisons)} comparisons of this table, per metric; a "
        f"difference is called real when its Holm-adjusted ROUGE-L p is at most {ALPHA}. The intervals are not "
        "adjusted for multiplicity. Details: docs/statistics.md."
    )
    fewest = min(tasks)
    smallest = 2.0 ** (1 - fewest) if 2**fewest <= PERMUTATIONS else 1 / (1 + PERMUTATIONS)
    if smallest * len(sig.comparisons) > ALPHA:  # Holm multiplies the smallest p by the number of comparisons
        text += (
            f" With {fewest} tasks the smallest possible p is {smallest:.3g}, so after Holm's correction over "
            f"{len(sig.comparisons)} comparisons no difference can be called real: that needs more test tasks."
        )
    if on_test:
        text += " The configurations were chosen on the test tasks, so these comparisons are optimistic."
    return text
