"""The intervals and paired tests of :mod:`peftbench.reporting.significance` as the report shows them: the "Which
differences are real" table and its paragraph, interval cells of the configuration tables, the bars of the plots, and
the rows of ``report_differences.csv`` and ``report_categories.csv``."""

from __future__ import annotations

from peftbench.reporting.analysis import Configuration
from peftbench.reporting.significance import ALPHA, LEVEL, POWER, Significance


def interval_texts(sig: Significance | None) -> dict[str, tuple[str, str]]:
    """Configuration key -> its ROUGE-L and exact-match intervals as "[low, high]", for the tables."""
    return {k: (iv["rougeL"].text(), iv["exact_match"].text()) for k, iv in sig.intervals.items()} if sig else {}


def best_bounds(sig: Significance | None, chosen: dict[str, Configuration]) -> dict[str, tuple[float, float]]:
    """``Configuration.system`` -> the ROUGE-L interval of its best configuration, for the params plot's bars."""
    if sig is None:
        return {}
    return {
        m: (sig.intervals[c.key]["rougeL"].low, sig.intervals[c.key]["rougeL"].high)
        for m, c in chosen.items()
        if c.key in sig.intervals
    }


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
    return [
        *map(str, sig.sizes[key]),
        *(f"{x:.4f}" for m in ("rougeL", "exact_match") for x in (iv[m].low, iv[m].high)),
    ]


INTERVAL_HEADER = ["test tasks", "test instances", "ROUGE-L 95% low", "ROUGE-L 95% high", "EM 95% low", "EM 95% high"]


def differences_table(sig: Significance) -> tuple[list[str], list[list[str]]]:
    """The "Which differences are real" table: one row per pair of methods on one base model (their best
    configurations)."""
    header = [
        "model",
        "comparison",
        "tasks",
        "seeds",
        "Δ ROUGE-L",
        "95% CI",
        "p",
        "p (Holm)",
        "detectable (80%)",
        "verdict",
        "Δ EM",
        "95% CI (EM)",
        "p (Holm, EM)",
    ]
    rows = []
    for c in sig.comparisons:
        r, e = c.difference["rougeL"], c.difference["exact_match"]
        seeds = f"{len(c.first.runs)}/{len(c.second.runs)}" + ("" if c.seeds_covered else " (not covered)")
        rows.append(
            [
                c.first.model_label,
                f"{c.first.method} − {c.second.method}",
                str(c.tasks),
                seeds,
                f"{r.estimate:+.2f}",
                r.text(),
                _p(c.p["rougeL"]),
                _p(c.holm["rougeL"]),
                f"{c.detectable['rougeL']:.2f}",
                c.verdict,
                f"{e.estimate:+.2f}",
                e.text(),
                _p(c.holm["exact_match"]),
            ]
        )
    return header, rows


def differences_csv_rows(sig: Significance) -> tuple[list[str], list[list[str]]]:
    """Every number of the comparisons, for ``report_differences.csv``."""
    header = [
        "model",
        "first",
        "first configuration",
        "second",
        "second configuration",
        "tasks",
        "instances",
        "seeds covered",
    ]
    for m in ("rougeL", "exact_match"):
        header += [
            f"{m} difference",
            f"{m} 95% low",
            f"{m} 95% high",
            f"{m} se",
            f"{m} df",
            f"{m} p",
            f"{m} p holm",
            f"{m} detectable",
        ]
    header += ["verdict"]
    rows = []
    for c in sig.comparisons:
        row = [
            c.first.model_label,
            c.first.method,
            c.first.label,
            c.second.method,
            c.second.label,
            str(c.tasks),
            str(c.instances),
            "yes" if c.seeds_covered else "no",
        ]
        for m in ("rougeL", "exact_match"):
            d = c.difference[m]
            row += [
                f"{d.estimate:.4f}",
                f"{d.low:.4f}",
                f"{d.high:.4f}",
                f"{d.se:.4f}",
                f"{d.df:.4g}",
                f"{c.p[m]:.6g}",
                f"{c.holm[m]:.6g}",
                f"{c.detectable[m]:.4f}",
            ]
        rows.append([*row, c.verdict])
    return header, rows


def categories_csv_rows(sig: Significance, chosen: dict[str, Configuration]) -> tuple[list[str], list[list[str]]]:
    """Per category intervals of each method's best configuration, for ``report_categories.csv``."""
    header = [
        "model",
        "method",
        "configuration",
        "category",
        "test tasks",
        "ROUGE-L",
        "ROUGE-L 95% low",
        "ROUGE-L 95% high",
        "EM",
        "EM 95% low",
        "EM 95% high",
    ]
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
    family = 2 * len(sig.comparisons)
    covered = all(c.seeds_covered for c in sig.comparisons)
    text = (
        f"Paired comparisons of the best configuration of every two methods on the same test instances "
        f"({'/'.join(map(str, tasks))} tasks). Δ = first − second in points (the difference of the overall scores, "
        "averaged over seeds). 95% CI and p: one t procedure over test tasks and training seeds (the variance of the "
        "per-task differences plus each method's seed-to-seed variance, Satterthwaite's degrees of freedom), so an "
        f"interval excludes 0 exactly when p < {1 - LEVEL:.2g}. p (Holm): Holm's correction over the {family} tests of "
        f"this table (every pair, both metrics); a difference is called real when its Holm-adjusted ROUGE-L p is at "
        f"most {ALPHA}. A pair not called real states the smallest difference it would have found with "
        f"{POWER:.0%} power at the family's level: differences below it are not ruled out. The intervals are not "
        "adjusted for multiplicity. Where a method had several configurations (learning rates, sizes), the one "
        "compared was chosen first, and that choice is not part of the test. Details: docs/statistics.md."
    )
    if not covered:
        text += (
            " Some configurations have one seed: their comparisons cover the choice of test tasks only, not the "
            "variation between training seeds, and may call a difference real that another seed would not show."
        )
    if min(tasks) < 6:
        text += f" With {min(tasks)} tasks the t reference has few degrees of freedom: only large differences show."
    if on_test:
        text += " The configurations were chosen on the test tasks, so these comparisons are optimistic."
    return text
