"""The study's tables and plots: configurations over seeds, best per method (chosen on validation),
ROUGE-L vs trainable %, learning-rate sensitivity, training-task count, per-category bars
(the page and report.md lay them out: :mod:`peftbench.reporting.html`, :mod:`peftbench.reporting.markdown`)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from peftbench.io import atomic_write_bytes
from peftbench.reporting.analysis import Configuration, best_by, best_per_method, memory_header

MARKERS = "os^Dv<>pPX*h"


def _pm(value: tuple[float, float] | None, digits: int = 2) -> str:
    if value is None or math.isnan(value[0]):
        return "–"
    return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"


def _opt(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def selection(configs: list[Configuration]) -> tuple[dict[str, Configuration], str]:
    """One configuration per method and base model (keyed by ``Configuration.system``) for the summary, and how
    it was chosen."""
    best = best_per_method(configs)
    if best:
        return best, "chosen on validation ROUGE-L (of the weights tested: eval.weights), reported on the test tasks"
    chosen: dict[str, Configuration] = {}
    for config in configs:
        current = chosen.get(config.system)
        if current is None or config.test()[0] > current.test()[0]:
            chosen[config.system] = config
    return chosen, "runs have no validation tasks, so this is the best mean *test* score (not the study's protocol)"


def _with_intervals(
    header: list[str], rows: list[list[str]], keys: list[str], intervals: dict[str, tuple[str, str]] | None
) -> tuple[list[str], list[list[str]]]:
    """Adds a 95% interval column after test ROUGE-L and after test EM (``intervals``: configuration key ->
    the two intervals as text; "–" for a configuration without one). Unchanged when ``intervals`` is empty."""
    if not intervals:
        return header, rows
    at_rouge, at_em = header.index("test ROUGE-L") + 1, header.index("test EM") + 2
    header = [*header]
    header.insert(at_rouge, "95% CI")
    header.insert(at_em, "95% CI (EM)")
    out = []
    for key, row in zip(keys, rows, strict=True):
        rouge, em = intervals.get(key, ("–", "–"))
        row = [*row]
        row.insert(at_rouge, rouge)
        row.insert(at_em, em)
        out.append(row)
    return header, out


CONFIGURATION_COLUMNS = (
    "model",
    "method",
    "configuration",
    "seeds",
    "trainable % of base",
    "validation ROUGE-L",
    "test ROUGE-L",
    "test EM",
)
"""The columns the configurations table and the best-per-method table share."""


def best_table(
    chosen: dict[str, Configuration], intervals: dict[str, tuple[str, str]] | None = None
) -> tuple[list[str], list[list[str]]]:
    header = [
        *CONFIGURATION_COLUMNS,
        "train time (s)",
        memory_header([m for c in chosen.values() for m in c.runs]),
    ]
    rows = []
    ordered = by_model(chosen)
    for c in ordered:
        rows.append(
            [
                c.model_label,
                c.method,
                c.label,
                str(len(c.runs)),
                f"{c.trainable_percent:.4f}",
                _pm(c.validation()),
                _pm(c.test()),
                _pm(c.test("exact_match")),
                _opt(c.mean_of("train_time_s"), ".1f"),
                _opt(c.mean_of("peak_memory_mb"), ".0f"),
            ]
        )
    return _with_intervals(header, rows, [c.key for c in ordered], intervals)


def by_model(chosen: dict[str, Configuration]) -> list[Configuration]:
    """The chosen configurations ordered by base model, then method."""
    return sorted(chosen.values(), key=lambda c: (c.model_label, c.method))


def configurations_table(
    configs: list[Configuration], intervals: dict[str, tuple[str, str]] | None = None
) -> tuple[list[str], list[list[str]]]:
    header = list(CONFIGURATION_COLUMNS)
    rows = [
        [
            c.model_label,
            c.method,
            c.label,
            ", ".join(map(str, c.seeds)),
            f"{c.trainable_percent:.4f}",
            _pm(c.validation()),
            _pm(c.test()),
            _pm(c.test("exact_match")),
        ]
        for c in configs
    ]
    return _with_intervals(header, rows, [c.key for c in configs], intervals)


# --------------------------------------------------------------------------------------------------
# Plots


def _plain_log_formatter(**kwargs: Any) -> Any:
    """matplotlib's log-axis formatter (which ticks get a label), writing each label as a plain number."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    return Plain(**kwargs)


def _figure(draw: Callable[[Any], bool], path: Path, size: tuple[float, float] = (7, 4.5)) -> bool:
    """Draws with ``draw(ax)``; writes the PNG when it drew something. Returns whether it did."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=120, layout="constrained")
    try:
        if not draw(ax):
            return False
        if ax.get_xscale() == "log":  # plain numbers (0.5, 5, 0.001), not 5×10^-1
            ax.xaxis.set_major_formatter(_plain_log_formatter())
            ax.xaxis.set_minor_formatter(_plain_log_formatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
        ax.grid(True, which="both", alpha=0.3)
        legend_below(fig, ax)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        atomic_write_bytes(path, buf.getvalue())
        return True
    finally:
        plt.close(fig)


def legend_below(fig: Any, ax: Any, fontsize: float = 7.5) -> None:
    """The legend under the plot (a constrained-layout figure, made taller for it), where it never covers points
    or error bars, as a legend inside the axes did."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    columns = 2 if len(labels) > 6 and max(map(len, labels)) < 45 else 1
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + 0.2 * math.ceil(len(labels) / columns) + 0.2)
    fig.legend(handles, labels, loc="outside lower center", fontsize=fontsize, ncols=columns, frameon=False)


def _bars(mean: float, interval: tuple[float, float] | None, std: float) -> tuple[float, float]:
    """Error-bar lengths below and above ``mean``: to the interval's ends, or ± std without one (cut at 0: ROUGE-L is
    not negative)."""
    if interval is None:
        return min(std, max(mean, 0.0)), std
    return max(0.0, mean - interval[0]), max(0.0, interval[1] - mean)


def plot_best_vs_params(
    chosen: dict[str, Configuration],
    untrained: dict[str, float],
    how: str,
    path: Path,
    intervals: dict[str, tuple[float, float]] | None = None,
) -> bool:
    """ROUGE-L against trainable % of each method's best configuration per base model; bars: the 95% interval of
    the test ROUGE-L where ``intervals`` (``Configuration.system`` -> (low, high)) has it, else ± std over seeds.
    ``untrained``: base model label -> the untrained base's test ROUGE-L (a dashed line each)."""
    intervals = intervals or {}

    def draw(ax) -> bool:
        for i, system in enumerate(sorted(chosen)):
            c = chosen[system]
            mean, std = c.test()
            if c.trainable_percent <= 0:
                continue
            below, above = _bars(mean, intervals.get(system), std)
            ax.errorbar(
                [c.trainable_percent],
                [mean],
                yerr=[[below], [above]],
                fmt=MARKERS[i % len(MARKERS)],
                markersize=8,
                capsize=4,
                label=f"{system} ({c.label})",
            )
        for j, (model, score) in enumerate(sorted(untrained.items())):
            ax.axhline(score, color="grey", linestyle=("--", ":", "-.")[j % 3], label=f"untrained base · {model}")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("trainable parameters (% of the base model's, log scale)")
        bars = "95% CI over test tasks and training seeds" if intervals else "± std over seeds"
        ax.set_ylabel(f"test ROUGE-L (mean over seeds)\nbars: {bars}", fontsize=9)
        ax.set_title("Best configuration per method" + ("" if how.startswith("chosen on validation") else " (on test)"))
        return bool(chosen)

    return _figure(draw, path)


def _curves(configs: list[Configuration], attribute: str, xlabel: str, title: str, log_x: bool, path: Path) -> bool:
    def draw(ax) -> bool:
        drawn = False
        for i, system in enumerate(sorted({c.system for c in configs})):
            points = best_by(configs, system, attribute)
            if len(points) < 2:
                continue
            xs = list(points)
            means = [points[x].test()[0] for x in xs]
            bars = [_bars(m, None, points[x].test()[1]) for m, x in zip(means, xs, strict=True)]
            ax.errorbar(xs, means, yerr=np.transpose(bars), marker=MARKERS[i % len(MARKERS)], capsize=3, label=system)
            drawn = True
        if log_x:
            ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test ROUGE-L (mean ± std over seeds)")
        ax.set_title(title)
        return drawn

    return _figure(draw, path)


def plot_learning_rates(configs: list[Configuration], path: Path) -> bool:
    return _curves(
        configs,
        "learning_rate",
        "learning rate (log scale)",
        "Learning-rate sensitivity (best other settings per rate)",
        True,
        path,
    )


def plot_task_counts(configs: list[Configuration], path: Path) -> bool:
    return _curves(
        configs,
        "train_tasks",
        "training tasks (log scale)",
        "Training-task count (best other settings per count)",
        True,
        path,
    )


def plot_categories(
    chosen: dict[str, Configuration], path: Path, intervals: dict[str, dict[str, tuple[float, float]]] | None = None
) -> bool:
    """Per-category ROUGE-L bars of each method's best configuration per base model; error bars: the 95% interval
    where ``intervals`` (``Configuration.system`` -> category -> (low, high)) has it, else ± std over seeds."""
    categories = sorted({c for config in chosen.values() for m in config.runs for c in m.get("per_category", {})})
    intervals = intervals or {}

    def draw(ax) -> bool:
        if not categories or not chosen:
            return False
        methods = sorted(chosen)
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            values = [chosen[method].category(c) for c in categories]
            own = intervals.get(method, {})
            bars = [_bars(v[0], own.get(c), v[1]) for v, c in zip(values, categories, strict=True)]
            xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(categories))]
            ax.bar(
                xs,
                [v[0] for v in values],
                width,
                yerr=np.transpose(bars),
                capsize=2,
                label=method,
                error_kw={"elinewidth": 0.8},
            )
        ax.set_xticks(range(len(categories)))
        ax.set_xticklabels([c.replace("_", " ") for c in categories], rotation=30, ha="right", fontsize=7)
        bars_are = "95% CI over the category's tasks and training seeds" if intervals else "± std over seeds"
        ax.set_ylabel(f"test ROUGE-L\nbars: {bars_are}", fontsize=8)
        ax.set_title("Per category (best configuration per method)")
        return True

    return _figure(draw, path, size=(max(7.0, 0.9 * len(categories) + 3), 4.8))
