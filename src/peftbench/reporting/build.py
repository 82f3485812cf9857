"""Side-by-side report of every run below a directory: Markdown, CSV, PNG plots and one HTML page.

The report has three levels: the best configuration per method (chosen on validation ROUGE-L, as the study
does, then reported on the test tasks, mean ± std over seeds), every configuration over its seeds, and
every run. Where the runs' predictions are at hand, every configuration's test scores get a 95% interval over test
tasks and training seeds and the best configurations of every two methods a paired test ("Which differences are real",
:mod:`peftbench.reporting.significance`). Plots: ROUGE-L vs trainable %, learning-rate sensitivity,
training-task count, per category.

:func:`write_report` analyses the runs once (:class:`peftbench.reporting.model.Study`), builds what the report shows
(:func:`peftbench.reporting.model.build_report`) and lays it out twice: :mod:`peftbench.reporting.markdown` (report.md)
and :mod:`peftbench.reporting.html` (report.html).
"""

from __future__ import annotations

import contextlib
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.errors import PeftbenchError
from peftbench.io import DamagedFileError, atomic_write_bytes, atomic_write_text, read_json_file
from peftbench.recipe.runfiles import METRICS_FILE, finished_metrics, trainable_percent
from peftbench.reporting.analysis import REPEAT_OF, memory_header, memory_measured

if TYPE_CHECKING:
    from peftbench.reporting.model import Study

_KEY_OPTIONS = ("r", "alpha", "size", "num_virtual_tokens", "projection")
TRAINABLE_PERCENT = "trainable % of base"
"""Column of the trainable share: of the base model's parameters, everywhere (``rundir.trainable_percent``)."""
MEMORY_OF = "peak memory of"
"""Column of what a run's peak-memory figure counts, and when (:func:`.analysis.memory_measured`)."""


@dataclass
class ReportFiles:
    """What ``write_report`` produced."""

    markdown: Path
    csv: Path
    plot: Path
    table: str
    """The per-run Markdown table, for printing."""
    html: Path | None = None
    configurations_csv: Path | None = None
    plots: list[Path] = field(default_factory=list)
    """Every PNG written (``plot`` first)."""
    summary: str = ""
    """The best-configuration-per-method Markdown table, for printing."""
    differences: str = ""
    """The "Which differences are real" Markdown table, for printing (empty without one)."""
    differences_csv: Path | None = None
    categories_csv: Path | None = None
    left_out: list[str] = field(default_factory=list)
    """Runs the statistics do not count, each with why (a damaged metrics.json: left out; a repeat of another run's
    config and seed: listed, counted once)."""
    notes: list[str] = field(default_factory=list)
    """What the intervals and tests could not cover, and why (runs without predictions, one seed, few tasks)."""


def collect_runs(runs_dir: str | Path, left_out: list[str] | None = None) -> list[dict[str, Any]]:
    """Finished runs' metrics below ``runs_dir`` (any depth), sorted by method then name. Which runs are finished is
    :func:`peftbench.recipe.runfiles.finished_metrics`'s to say (as for ``peftbench status`` and the sweep).

    A run whose metrics.json is damaged is left out (``peftbench evaluate`` writes it again); a run with the config
    hash, seed and method of one already collected (run again, or a copied directory) is kept for the runs table
    but marked ``REPEAT_OF`` that run: counted twice it would pass for another training seed. Each gets a line in
    ``left_out``."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise PeftbenchError(f"{root} is not a directory")
    runs = []
    seen: dict[tuple[str, Any, Any], str] = {}
    for path in sorted(root.rglob(METRICS_FILE), key=lambda p: (len(p.parts), p)):  # of two copies, the shallower
        name = str(path.parent.relative_to(root)) or "."
        metrics = None
        with contextlib.suppress(FileNotFoundError):  # removed while we looked (a run quarantined, a sweep cleaning)
            if _damaged(path, name, left_out):
                continue
            metrics = finished_metrics(path.parent)
        if metrics is None:
            continue
        same = (str(metrics.get("config_hash")), metrics.get("seed"), metrics.get("method"))  # untrained: its own
        if metrics.get("config_hash") and same in seen:
            metrics[REPEAT_OF] = seen[same]
            if left_out is not None:
                left_out.append(
                    f"{name}: the config and seed of {seen[same]} (run again or copied): listed, counted once in the "
                    "statistics"
                )
        else:
            seen[same] = name
        metrics["_dir"] = name
        runs.append(metrics)
    if not runs:
        raise PeftbenchError(f"no finished runs (metrics.json with status 'finished') below {root}")
    return sorted(runs, key=lambda m: (m["method"] != "untrained", m["method"], m["_dir"]))


def _damaged(path: Path, name: str, left_out: list[str] | None) -> bool:
    """Whether a run's metrics.json cannot be read (said in ``left_out``)."""
    try:
        read_json_file(path)
    except PeftbenchError as exc:
        if left_out is not None:
            reason = exc.reason if isinstance(exc, DamagedFileError) else str(exc)
            left_out.append(f"{name}: metrics.json is damaged ({reason}); `peftbench evaluate` writes it again")
        return True
    return False


def hyperparameters(m: dict[str, Any]) -> str:
    """A short string of the run's key hyperparameters (method size knobs and learning rate)."""
    parts = [f"{k}={v}" for k, v in (m.get("method_config") or {}).items() if k in _KEY_OPTIONS and v is not None]
    train = m.get("train") or {}
    if train.get("learning_rate"):
        parts.append(f"lr={train['learning_rate']:g}")
    if train.get("steps"):
        parts.append(f"steps={train['steps']}")
    return " ".join(parts) or "-"


def tested_weights(m: dict[str, Any]) -> str:
    """Which weights the test was scored with: 'best@40 (val 23.10)', 'last@60', or '-' (untrained)."""
    w = m.get("weights") or {}
    if not w:
        return "-" if m.get("method") == "untrained" or not m.get("train") else "last"
    val = f" (val {w['validation_rougeL']:.2f})" if isinstance(w.get("validation_rougeL"), (int, float)) else ""
    return f"{w['used']}@{w['step']}{val}"


def report_rows(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]], list[str]]:
    """Header, rows (for the CSV) and the categories; per category both exact match and ROUGE-L."""
    categories = sorted({c for m in runs for c in m.get("per_category", {})})
    header = ["run", "method", "model", "seed", "hyperparameters", "trainable params", TRAINABLE_PERCENT]
    header += ["exact match", "ROUGE-L"]
    for c in categories:
        header += [f"EM {c}", f"ROUGE-L {c}"]
    header += ["test weights", "train time (s)", memory_header(runs), MEMORY_OF]
    rows = []
    for m in runs:
        per_cat = m.get("per_category", {})
        row = [
            m["_dir"],
            m["method"],
            m.get("_model") or Path(str(m.get("model", ""))).name or m.get("model", ""),
            m.get("seed", ""),
            hyperparameters(m),
            m.get("trainable_params", 0),
            trainable_percent(m),
            m["overall"]["exact_match"],
            m["overall"]["rougeL"],
        ]
        for c in categories:
            row += [per_cat[c]["exact_match"], per_cat[c]["rougeL"]] if c in per_cat else ["", ""]
        memory = m.get("peak_memory_mb")
        row += [tested_weights(m), m.get("train_time_s", 0.0), "" if memory is None else memory, memory_measured(m)]
        rows.append(row)
    return header, rows, categories


def _fmt(value: Any, column: str) -> str:
    if isinstance(value, bool) or value == "":
        return str(value)
    if column == "trainable params":
        return f"{int(value):,}"
    if column == TRAINABLE_PERCENT:
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def plot_rouge_vs_params(runs: list[dict[str, Any]], path: Path) -> None:
    """ROUGE-L against trainable-parameter % (log x), one marker per method and base model; untrained bases as
    dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "os^Dv<>pPX*h"
    from peftbench.reporting.plots import legend_below

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120, layout="constrained")
    systems = sorted({(m["method"], m.get("_model", "")) for m in runs if m["method"] != "untrained"})
    for i, (method, model) in enumerate(systems):
        pts = [
            (trainable_percent(m), m["overall"]["rougeL"])
            for m in runs
            if (m["method"], m.get("_model", "")) == (method, model)
        ]
        pts = [(x, y) for x, y in pts if x > 0]
        if pts:
            xs, ys = zip(*pts, strict=True)
            label = f"{method} · {model}" if model else method
            ax.scatter(xs, ys, marker=markers[i % len(markers)], s=60, label=label, zorder=3)
    for model, score in sorted(_untrained(runs).items()):
        ax.axhline(score, color="grey", linestyle="--", label=f"untrained base · {model}", zorder=2)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("trainable parameters (% of the base model's, log scale)")
    ax.set_ylabel("ROUGE-L (test tasks)")
    ax.set_title("ROUGE-L vs trainable parameters")
    ax.grid(True, which="both", alpha=0.3)
    legend_below(fig, ax)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _untrained(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Base model label -> the untrained base's test ROUGE-L (the first such run of each model)."""
    out: dict[str, float] = {}
    for m in runs:
        if m["method"] == "untrained":
            out.setdefault(m.get("_model", ""), m["overall"]["rougeL"])
    return out


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _write_or_remove(path: Path, header: list[str], rows: list[list[Any]]) -> Path | None:
    """Writes a CSV when it has rows; otherwise removes a stale one from an earlier report (it would mislead)."""
    if not rows:
        path.unlink(missing_ok=True)
        return None
    atomic_write_text(path, _csv(header, rows))
    return path


def write_report(
    runs_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    intervals: bool = True,
    bootstrap: int | None = None,
    seed: int | None = None,
) -> ReportFiles:
    """Writes ``report.{md,html,csv,png}``, ``report_configurations.csv`` and the study's plots
    (``report_lr.png``, ``report_tasks.png``, ``report_categories.png`` where the runs vary those) for every
    finished run below ``runs_dir``; with ``intervals``, also 95% intervals over test tasks and training seeds,
    paired tests between methods, ``report_differences.csv`` and ``report_categories.csv``.

    ``bootstrap`` and ``seed`` are accepted for scripts written before the intervals became analytic: ``bootstrap=0``
    turns the intervals off, other values change nothing.

    Raises:
        PeftbenchError: No finished runs, or a negative ``bootstrap``.
    """
    from peftbench.reporting import html, markdown
    from peftbench.reporting.model import BEST, DIFFERENCES, build_report

    if bootstrap is not None and bootstrap < 0:
        raise PeftbenchError(f"--bootstrap must be 0 (no intervals, as --no-intervals) or positive, not {bootstrap}")
    if bootstrap == 0:
        intervals = False
    del seed  # no resampling any more: nothing random in the report
    study, rows = _study(runs_dir, intervals)
    out = Path(output_dir) if output_dir is not None else study.root
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(study, out)
    report = build_report(study, plots)
    summary, differences = report.table(BEST), report.table(DIFFERENCES)
    paths = ReportFiles(
        markdown=out / "report.md",
        csv=out / "report.csv",
        plot=plots[0][0],
        table=markdown.table(study.runs_table),
        html=out / "report.html",
        configurations_csv=out / "report_configurations.csv",
        plots=[p for p, _ in plots],
        summary=markdown.table(summary) if summary else "",
        differences=markdown.table(differences) if differences else "",
        left_out=study.left_out,
        notes=list(study.sig.notes) if study.sig else [],
    )
    atomic_write_text(paths.markdown, markdown.render(report))
    atomic_write_text(paths.csv, _csv(*rows))
    atomic_write_text(paths.html, html.render(report))
    _write_csvs(study, out, paths)
    return paths


def _study(runs_dir: str | Path, intervals: bool) -> tuple[Study, tuple[list[str], list[list[Any]]]]:
    """The runs below ``runs_dir`` analysed (configurations, selection, intervals and tests), and the runs' CSV."""
    from peftbench.reporting import plots as sr
    from peftbench.reporting import significance as sg
    from peftbench.reporting.analysis import annotate_models, configurations
    from peftbench.reporting.model import Study, Table

    left_out: list[str] = []
    runs = collect_runs(runs_dir, left_out)
    root = Path(runs_dir)
    annotate_models(runs, root)  # every selection is per base model; tables and legends name it
    header, rows, categories = report_rows(runs)
    shown = [[_fmt(v, h) for v, h in zip(row, header, strict=True)] for row in rows]
    runs_table = Table(header, shown, [(f"{c} (EM / RL)", f"EM {c}", f"ROUGE-L {c}") for c in categories])
    configs = configurations(runs, root)
    chosen, how = sr.selection(configs)
    sig = sg.analyse(configs, chosen, root) if intervals and configs else None
    return Study(root, runs, runs_table, configs, chosen, how, sig, intervals, left_out), (header, rows)


def _plots(study: Study, out: Path) -> list[tuple[Path, str]]:
    """Draws the plots into ``out`` (removing stale ones the runs no longer give); the PNGs and their titles."""
    from peftbench.reporting import differences as dt
    from peftbench.reporting import plots as sr

    configs, chosen = study.configs, study.chosen
    main_plot = out / "report.png"
    if chosen:
        sr.plot_best_vs_params(chosen, _untrained(study.runs), study.how, main_plot, dt.best_bounds(study.sig, chosen))
    else:
        plot_rouge_vs_params(study.runs, main_plot)
    plots = [(main_plot, "ROUGE-L vs trainable parameters")]
    category_ci = dt.category_bounds(study.sig)
    for name, draw, title in (
        ("report_lr.png", lambda p: sr.plot_learning_rates(configs, p), "Learning-rate sensitivity"),
        ("report_tasks.png", lambda p: sr.plot_task_counts(configs, p), "Training-task count vs ROUGE-L"),
        ("report_categories.png", lambda p: sr.plot_categories(chosen, p, category_ci), "ROUGE-L per category"),
    ):
        if draw(out / name):
            plots.append((out / name, title))
        else:
            (out / name).unlink(missing_ok=True)  # a stale plot from an earlier report would mislead
    return plots


NUMBER_COLUMNS = tuple(
    f"{what} {stat}" for what in ("validation ROUGE-L", "test ROUGE-L", "test EM") for stat in ("mean", "std")
)
"""The configurations CSV's mean ± std columns again as plain numbers (empty where there is none), for pandas or R."""


def _numbers(c: Any) -> list[str]:
    pairs = (c.validation(), c.test(), c.test("exact_match"))
    return [f"{v:.4f}" if pair is not None else "" for pair in pairs for v in (pair or (0.0, 0.0))]


def _write_csvs(study: Study, out: Path, paths: ReportFiles) -> None:
    """``report_configurations.csv``, and ``report_differences.csv`` / ``report_categories.csv`` where there are
    intervals (else removed)."""
    from peftbench.reporting import differences as dt
    from peftbench.reporting import plots as sr

    sig, chosen = study.sig, study.chosen
    header, rows = sr.configurations_table(study.configs)
    conf_csv = [
        [*row, "yes" if chosen.get(c.system) is c else "", *dt.interval_columns(sig, c.key), *_numbers(c)]
        for c, row in zip(study.configs, rows, strict=True)
    ]
    assert paths.configurations_csv is not None
    header = [*header, "best", *dt.INTERVAL_HEADER, *NUMBER_COLUMNS]
    atomic_write_text(paths.configurations_csv, _csv(header, conf_csv))
    differences_csv = dt.differences_csv_rows(sig) if sig else ([], [])
    categories_csv = dt.categories_csv_rows(sig, chosen) if sig else ([], [])
    paths.differences_csv = _write_or_remove(out / "report_differences.csv", *differences_csv)
    paths.categories_csv = _write_or_remove(out / "report_categories.csv", *categories_csv)
