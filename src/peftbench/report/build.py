"""Side-by-side report of every run below a directory: Markdown, CSV, PNG plots and one HTML page.

The report has three levels: the best configuration per method (chosen on validation ROUGE-L, as the study
does, then reported on the test tasks, mean ± std over seeds), every configuration over its seeds, and
every run. Where the runs' predictions are at hand, every configuration's test scores get a 95% interval over test
tasks and training seeds and the best configurations of every two methods a paired test ("Which differences are real",
:mod:`peftbench.report.significance`). Plots: ROUGE-L vs trainable %, learning-rate sensitivity,
training-task count, per category.
"""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.errors import PeftbenchError
from peftbench.io import atomic_write_bytes, atomic_write_text
from peftbench.recipe.runfiles import METRICS_FILE, trainable_percent

if TYPE_CHECKING:
    from peftbench.report.significance import Significance

_KEY_OPTIONS = ("r", "alpha", "size", "num_virtual_tokens", "projection")
TRAINABLE_PERCENT = "trainable % of base"
"""Column of the trainable share: of the base model's parameters, everywhere (``rundir.trainable_percent``)."""


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


def collect_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Finished runs' metrics below ``runs_dir`` (any depth), sorted by method then name."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise PeftbenchError(f"{root} is not a directory")
    runs = []
    for path in sorted(root.rglob(METRICS_FILE)):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(metrics, dict) and metrics.get("status") == "finished" and "overall" in metrics:
            metrics["_dir"] = str(path.parent.relative_to(root)) or "."
            runs.append(metrics)
    if not runs:
        raise PeftbenchError(f"no finished runs (metrics.json with status 'finished') below {root}")
    return sorted(runs, key=lambda m: (m["method"] != "untrained", m["method"], m["_dir"]))


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
    header += ["test weights", "train time (s)", "peak memory (MB)"]
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
        row += [tested_weights(m), m.get("train_time_s", 0.0), m.get("peak_memory_mb", "")]
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


def markdown_table(header: list[str], rows: list[list[Any]], categories: list[str]) -> str:
    """A GitHub-flavoured Markdown table; each category is one 'EM / ROUGE-L' column to stay readable."""
    cat_cols = {h for c in categories for h in (f"EM {c}", f"ROUGE-L {c}")}
    md_header = [h for h in header if h not in cat_cols]
    at = md_header.index("ROUGE-L") + 1
    md_header[at:at] = [f"{c} (EM / RL)" for c in categories]
    lines = ["| " + " | ".join(md_header) + " |", "|" + "|".join("---" for _ in md_header) + "|"]
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        plain = [_fmt(cells[h], h) for h in header if h not in cat_cols]
        pairs = [f"{_fmt(cells[f'EM {c}'], '')} / {_fmt(cells[f'ROUGE-L {c}'], '')}" for c in categories]
        plain[at:at] = pairs
        lines.append("| " + " | ".join(plain) + " |")
    return "\n".join(lines)


def plot_rouge_vs_params(runs: list[dict[str, Any]], path: Path) -> None:
    """ROUGE-L against trainable-parameter % (log x), one marker per method and base model; untrained bases as
    dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "os^Dv<>pPX*h"
    from peftbench.report.plots import legend_below

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120, layout="constrained")
    systems = sorted({(m["method"], m.get("_model", "")) for m in runs if m["method"] != "untrained"})
    for i, (method, model) in enumerate(systems):
        pts = [(trainable_percent(m), m["overall"]["rougeL"]) for m in runs
               if (m["method"], m.get("_model", "")) == (method, model)]  # fmt: skip
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


def write_report(runs_dir: str | Path, output_dir: str | Path | None = None, *, intervals: bool = True,
                 bootstrap: int | None = None, seed: int | None = None) -> ReportFiles:  # fmt: skip
    """Writes ``report.{md,html,csv,png}``, ``report_configurations.csv`` and the study's plots
    (``report_lr.png``, ``report_tasks.png``, ``report_categories.png`` where the runs vary those) for every
    finished run below ``runs_dir``; with ``intervals``, also 95% intervals over test tasks and training seeds,
    paired tests between methods, ``report_differences.csv`` and ``report_categories.csv``.

    ``bootstrap`` and ``seed`` are accepted for scripts written before the intervals became analytic: ``bootstrap=0``
    turns the intervals off, other values change nothing.

    Raises:
        PeftbenchError: No finished runs, or a negative ``bootstrap``.
    """
    from peftbench.report import plots as sr
    from peftbench.report import significance as sg
    from peftbench.report.analysis import annotate_models, configurations

    if bootstrap is not None and bootstrap < 0:
        raise PeftbenchError(f"--bootstrap must be 0 (no intervals, as --no-intervals) or positive, not {bootstrap}")
    if bootstrap == 0:
        intervals = False
    del seed  # no resampling any more: nothing random in the report
    runs = collect_runs(runs_dir)
    root = Path(runs_dir)
    annotate_models(runs, root)  # every selection is per base model; tables and legends name it
    out = Path(output_dir) if output_dir is not None else root
    out.mkdir(parents=True, exist_ok=True)
    header, rows, categories = report_rows(runs)
    table = markdown_table(header, rows, categories)
    configs = configurations(runs, root)
    chosen, how = sr.selection(configs)
    untrained = _untrained(runs)
    sig = sg.analyse(configs, chosen, root) if intervals and configs else None
    ci_text, best_ci, category_ci = sg.interval_texts(sig), sg.best_bounds(sig, chosen), sg.category_bounds(sig)

    plots: list[tuple[Path, str]] = []
    main_plot = out / "report.png"
    if chosen:
        sr.plot_best_vs_params(chosen, untrained, how, main_plot, best_ci)
    else:
        plot_rouge_vs_params(runs, main_plot)
    plots.append((main_plot, "ROUGE-L vs trainable parameters"))
    for name, draw, alt in (
        ("report_lr.png", lambda p: sr.plot_learning_rates(configs, p), "Learning-rate sensitivity"),
        ("report_tasks.png", lambda p: sr.plot_task_counts(configs, p), "Training-task count vs ROUGE-L"),
        ("report_categories.png", lambda p: sr.plot_categories(chosen, p, category_ci), "ROUGE-L per category"),
    ):
        if draw(out / name):
            plots.append((out / name, alt))
        else:
            (out / name).unlink(missing_ok=True)  # a stale plot from an earlier report would mislead

    best_header, best_rows = sr.best_table(chosen, ci_text)
    conf_header, conf_rows = sr.configurations_table(configs, ci_text)
    summary = sr.markdown(best_header, best_rows) if best_rows else ""
    notes = sorted({f"- {m['method']}: {m['trainable_params_note']}" for m in runs if m.get("trainable_params_note")})
    note_text = ""
    if notes:
        note_text += "Trainable-parameter counts are the parameters trained and stored.\n" + "\n".join(notes) + "\n"
    if "cpu_peak_rss" in {str(m.get("peak_memory_kind")) for m in runs}:
        note_text += "\nPeak memory on CPU is the process's peak resident set "
        note_text += "(it includes earlier work in the same process).\n"
    diff_header, diff_rows = sg.differences_table(sig) if sig else ([], [])
    differences = sr.markdown(diff_header, diff_rows) if diff_rows else ""
    # Chosen on test only matters where there was a choice (a method with several configurations).
    on_test = not how.startswith("chosen on validation") and len(configs) > len(chosen)
    real_text = _differences_text(sig, intervals, chosen, on_test)
    intro = how[0].upper() + how[1:] + "; mean ± std over seeds"
    intro += "; 95% CI: t interval over test tasks and training seeds." if ci_text else "."
    seeds = sorted({len(c.runs) for c in configs})
    md = f"# peftbench report: {root}\n\n"
    if summary:
        md += f"## Best configuration per method\n\n{intro}\n\n{summary}\n\n"
    if real_text:
        md += f"## Which differences are real\n\n{real_text}\n\n" + (f"{differences}\n\n" if differences else "")
        md += "".join(f"- {n}\n" for n in (sig.notes if sig else [])) + ("\n" if sig and sig.notes else "")
    if conf_rows:
        md += f"## All configurations\n\n{len(configs)} configurations, {'/'.join(map(str, seeds))} seed(s) each."
        md += "\n\n"
        md += sr.markdown(conf_header, conf_rows) + "\n\n"
    md += f"## Runs\n\n{table}\n\n{note_text}\n"
    md += "\n".join(f"![{alt}]({path.name})" for path, alt in plots) + "\n"

    title = f"peftbench report: {html.escape(str(root))}"
    # One offline file (plots embedded, no external resources); wide tables scroll inside the page at laptop width.
    page = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<style>{sr.CSS}{_PAGE_CSS}</style></head><body><h1>{title}</h1>",
            f"<p class='units'>{html.escape(_units_text(how))}</p>"]  # fmt: skip
    if best_rows:
        page += ["<h2>Best configuration per method</h2>", f"<p>{html.escape(intro)}</p>"]
        page += [sr.html_table(best_header, best_rows)]
    if real_text:
        page += ["<h2>Which differences are real</h2>", f"<p>{html.escape(real_text)}</p>"]
        page += [sr.html_table(diff_header, diff_rows)] if diff_rows else []
        if sig and sig.notes:
            page += ["<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in sig.notes) + "</ul>"]
    page += [sr.image_tag(path, f"{alt}. {_PLOT_UNITS}; {how}.") for path, alt in plots]
    if conf_rows:
        page += ["<h2>All configurations</h2>", sr.html_table(conf_header, conf_rows)]
    page += [
        "<h2>Runs</h2>",
        sr.html_table(header, [[_fmt(v, h) for v, h in zip(r, header, strict=True)] for r in rows]),
    ]
    page += [f"<pre>{html.escape(note_text)}</pre>" if note_text else "", "</body></html>"]

    plain_header, plain_rows = sr.configurations_table(configs)
    conf_csv = [[*row, "yes" if chosen.get(c.system) is c else "", *sg.interval_columns(sig, c.key)]
                for c, row in zip(configs, plain_rows, strict=True)]  # fmt: skip
    paths = ReportFiles(out / "report.md", out / "report.csv", main_plot, table, out / "report.html",
                        out / "report_configurations.csv", [p for p, _ in plots], summary, differences)  # fmt: skip
    atomic_write_text(paths.markdown, md)
    atomic_write_text(paths.csv, _csv(header, rows))
    atomic_write_text(paths.configurations_csv, _csv([*plain_header, "best", *sg.INTERVAL_HEADER], conf_csv))
    atomic_write_text(paths.html, "\n".join(page))
    differences_csv = sg.differences_csv_rows(sig) if sig else ([], [])
    categories_csv = sg.categories_csv_rows(sig, chosen) if sig else ([], [])
    paths.differences_csv = _write_or_remove(out / "report_differences.csv", *differences_csv)
    paths.categories_csv = _write_or_remove(out / "report_categories.csv", *categories_csv)
    return paths


_PAGE_CSS = "table{display:block;max-width:100%;overflow-x:auto}.units{color:#333;font-size:0.9em}"
_PLOT_UNITS = "ROUGE-L: F-measure on the test tasks, 0–100"


def _units_text(how: str) -> str:
    """The page's first paragraph: what the numbers are, in which units, and how configurations were chosen."""
    return (
        "Scores are SuperNI's official metrics on the test tasks: ROUGE-L (F-measure) and exact match (EM), each "
        "0–100 (averaged over instances, ×100). Trainable % is of the model's total parameters; train time in seconds; "
        "peak memory in MB (2^20 bytes: the GPU allocator's peak, or on CPU the process's peak resident set). "
        f"Best configurations: {how}."
    )


def _differences_text(sig: Significance | None, intervals: bool, chosen: dict[str, Any], on_test: bool) -> str:
    """The paragraph of the "Which differences are real" section (empty when there is nothing to say)."""
    from peftbench.report import significance as sg

    if not chosen:
        return ""
    if not intervals:
        return "Intervals and tests are off (--no-intervals)."
    if len(chosen) < 2:
        return "Only one method was run, so there is no difference to test."
    if sig is None or not sig.comparisons:
        have = sum(c.key in sig.intervals for c in chosen.values()) if sig else 0
        if have >= 2:
            return "No two methods' best configurations share a test instance, so none could be compared."
        return f"Only {have} of {len(chosen)} methods have predictions for their best configuration: no comparison."
    return sg.explanation(sig, on_test)
