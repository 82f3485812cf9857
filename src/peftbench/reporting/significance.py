"""Which differences are real: intervals for every configuration, per category for the best one of each method,
and paired comparisons between the best configurations of every two methods (see docs/statistics.md).

Every interval and every test comes from one procedure, :mod:`peftbench.evaluation.inference`: a t interval over
test tasks and training seeds (the task-to-task variance of the per-task scores plus the seed-to-seed variance of
the overall scores, Satterthwaite's degrees of freedom). A difference between two methods is called real when its
p-value, after Holm's correction over every test the report makes (each pair of methods, both metrics), is at most
``ALPHA``; its interval then excludes zero, since the interval and the test are the same t statistic. Each
comparison also states the smallest difference it could have found with 80% power at the family's level, so that
"not distinguishable" reads "no difference larger than X detected". With one seed per configuration the seed
variance cannot be estimated: intervals and tests then cover the choice of test tasks only, and the report says so.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

from peftbench.errors import PeftbenchError
from peftbench.evaluation import inference
from peftbench.evaluation.task_scores import holm
from peftbench.recipe.instance_scores import METRICS, SystemScores, mismatch, read_run_scores, system_scores
from peftbench.recipe.runfiles import PREDICTIONS_FILE
from peftbench.reporting.analysis import Configuration

LEVEL = 0.95
"""Coverage of every interval."""
ALPHA = 0.05
"""A difference is called real when its Holm-adjusted ROUGE-L p-value is at most this."""
POWER = 0.8
"""The power at which each comparison's minimum detectable difference is stated."""
MIN_CATEGORY_TASKS = 3
"""Categories with fewer test tasks get no interval (the report says they are too small to judge)."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its t interval (``se``, ``df``: its standard error and degrees of freedom)."""

    estimate: float
    low: float
    high: float
    se: float = 0.0
    df: float = math.inf

    def text(self) -> str:
        return f"[{self.low:.2f}, {self.high:.2f}]"

    @classmethod
    def of(cls, e: inference.Estimate, bounded: bool = False) -> Interval:
        """``bounded``: a score, not a difference; its interval is clipped to the metric's range, 0-100."""
        low, high = e.interval(LEVEL)
        if bounded:
            low, high = max(low, 0.0), min(high, 100.0)
        return cls(e.estimate, low, high, e.se, e.df)


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
    """Per metric, the two-sided p-value of the t test over tasks and seeds."""
    seeds_covered: bool
    """Whether both configurations have several seeds, so that the seed-to-seed variance is in the test."""
    holm: dict[str, float] = field(default_factory=dict)
    """Per metric, the p-value after Holm's correction over every test of the report (both metrics)."""
    detectable: dict[str, float] = field(default_factory=dict)
    """Per metric, the smallest true difference found with 80% power at the family's level (Bonferroni)."""

    @property
    def real(self) -> bool:
        return self.holm["rougeL"] <= ALPHA

    @property
    def verdict(self) -> str:
        if not self.real:
            return f"no difference larger than {self.detectable['rougeL']:.2f} detected"
        if self.difference["rougeL"].estimate < 0:  # possible only when compared on a subset of the instances
            return f"{self.second.method} > {self.first.method}"
        return f"{self.first.method} > {self.second.method}"


@dataclass
class Significance:
    """Everything the report shows about uncertainty."""

    intervals: dict[str, dict[str, Interval]] = field(default_factory=dict)
    """Configuration key -> metric -> interval of its test score."""
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Configuration key -> (test tasks, test instances) behind its interval."""
    seeds: dict[str, int] = field(default_factory=dict)
    """Configuration key -> its number of seeds."""
    categories: dict[str, dict[str, dict[str, Interval]]] = field(default_factory=dict)
    """Method and model (``Configuration.system``) -> category -> metric -> interval, for each best configuration."""
    category_tasks: dict[str, int] = field(default_factory=dict)
    """Category -> its number of test tasks."""
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def one_seed(self) -> bool:
        """Whether some configuration has a single seed (its intervals do not cover seed variance)."""
        return any(n < 2 for n in self.seeds.values())


def _intervals(scores: SystemScores, tasks: list[int] | None = None) -> dict[str, Interval]:
    table = scores.seed_task_means(tasks)
    counts = scores.scores.counts if tasks is None else scores.scores.counts[tasks]
    return {m: Interval.of(inference.score(table[k], counts), bounded=True) for k, m in enumerate(METRICS)}


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
        notes.append(
            f"{len(missing)} of {len(configs)} configurations have a run without {PREDICTIONS_FILE}, so no "
            f"intervals: {shown}"
        )
    return systems


def analyse(configs: list[Configuration], chosen: dict[str, Configuration], root: Path) -> Significance:
    """Intervals for every configuration, per category for the chosen ones, and paired comparisons of the chosen
    ones (every pair of methods on the same base model), from the runs' predictions below ``root``."""
    result = Significance()
    systems = _load(configs, root, result.notes)
    for key, scores in systems.items():
        if scores.scores.num_tasks < 2:
            result.notes.append(f"{key}: one test task, no interval")
            continue
        result.intervals[key] = _intervals(scores)
        result.sizes[key] = (scores.scores.num_tasks, scores.scores.num_instances)
        result.seeds[key] = len(scores.per_seed) or 1

    best = {method: c for method, c in chosen.items() if c.key in result.intervals}
    small = set()
    for method, c in best.items():
        scores = systems[c.key]
        for category in sorted({x for x in scores.categories if x is not None}):
            tasks = [t for t, x in enumerate(scores.categories) if x == category]
            result.category_tasks[category] = len(tasks)
            if len(tasks) < MIN_CATEGORY_TASKS:
                small.add(category)
                continue
            result.categories.setdefault(method, {})[category] = _intervals(scores, tasks)
    if small:
        result.notes.append(
            f"categories with fewer than {MIN_CATEGORY_TASKS} test tasks get no interval (too small "
            f"to judge): {', '.join(sorted(small))}"
        )

    ranked = sorted(best.values(), key=lambda c: (-result.intervals[c.key]["rougeL"].estimate, c.method))
    for a, b in itertools.combinations(ranked, 2):
        if a.model_label != b.model_label:  # methods are compared on one base model, never across models
            continue
        comparison = _compare(a, b, systems, result)
        if comparison is not None:
            result.comparisons.append(comparison)
    result.comparisons.sort(key=lambda c: "full" not in (c.first.method, c.second.method))  # stable: rank order
    tests = [(c, m) for c in result.comparisons for m in METRICS]  # one family: every pair, both metrics
    for (c, metric), adjusted in zip(tests, holm([c.p[m] for c, m in tests]), strict=True):
        c.holm[metric] = float(adjusted)
        d = c.difference[metric]
        c.detectable[metric] = inference.minimum_detectable(d.se, d.df, ALPHA / len(tests), POWER)
    if result.one_seed:
        result.notes.append(
            "configurations with one seed: their intervals and tests cover the choice of test tasks, not training-"
            "seed variance (train 3 or more seeds per configuration for verdicts about methods)"
        )
    return result


def _compare(
    a: Configuration, b: Configuration, systems: dict[str, SystemScores], result: Significance
) -> Comparison | None:
    sa, sb = systems[a.key], systems[b.key]
    if sa.ids != sb.ids:
        common = set(sa.ids) & set(sb.ids)
        if not common:
            result.notes.append(f"{a.method} vs {b.method} ({a.model_label}): no test instance in common, not compared")
            return None
        sa, sb = sa.restricted(common), sb.restricted(common)
        result.notes.append(
            f"{a.method} vs {b.method} ({a.model_label}): compared on the {len(common)} test instances both have"
        )
        if sa.scores.num_tasks < 2:
            result.notes.append(f"{a.method} vs {b.method} ({a.model_label}): one common test task, not compared")
            return None
    ta, tb = sa.seed_task_means(), sb.seed_task_means()
    estimates = {m: inference.difference(ta[k], tb[k], sa.scores.counts) for k, m in enumerate(METRICS)}
    return Comparison(
        a,
        b,
        sa.scores.num_tasks,
        sa.scores.num_instances,
        {m: Interval.of(e) for m, e in estimates.items()},
        {m: e.p_value() for m, e in estimates.items()},
        all(e.seeds_covered for e in estimates.values()),
    )
