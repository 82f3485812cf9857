"""What the report shows, built once from the runs; :mod:`peftbench.reporting.markdown` and
:mod:`peftbench.reporting.html` only lay it out.

A :class:`Report` is a title, a lead paragraph, sections of blocks (paragraphs, bullet lists, tables) and figures.
Text that carries emphasis is a sequence of :class:`Span` (plain, ``em``, ``strong``, ``code``), so that Markdown
writes ``*x*``, ``**x**`` and `` `x` `` where HTML writes ``<em>``, ``<strong>`` and ``<code>``. Text the report
writes itself may use that Markdown markup (:func:`inline` reads it); what comes from the runs (directory names,
notes, configuration labels) is plain text (:func:`plain`), written as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.reporting import differences as dt
from peftbench.reporting.analysis import Configuration
from peftbench.reporting.plots import best_table, configurations_table
from peftbench.reporting.significance import Significance


@dataclass(frozen=True)
class Span:
    """A run of text in one style: "" (plain), "em", "strong" or "code"."""

    text: str
    style: str = ""


Text = tuple[Span, ...]

_INLINE = re.compile(r"\*\*(?P<strong>[^*]+)\*\*|\*(?P<em>[^*\s](?:[^*]*[^*\s])?)\*|`(?P<code>[^`]+)`")


def inline(markdown: str) -> Text:
    """Text with Markdown's inline markup (``*em*``, ``**strong**``, `` `code` ``) read into spans; anything else,
    stray asterisks included, is plain."""
    spans, at = [], 0
    for match in _INLINE.finditer(markdown):
        if match.start() > at:
            spans.append(Span(markdown[at : match.start()]))
        style = match.lastgroup or ""
        spans.append(Span(match.group(style), style))
        at = match.end()
    if at < len(markdown):
        spans.append(Span(markdown[at:]))
    return tuple(spans)


def plain(text: str) -> Text:
    """Text without markup (from the runs): shown as it is."""
    return (Span(text),) if text else ()


def text_of(text: Text) -> str:
    """The words without their styles (for an image's alt text)."""
    return "".join(span.text for span in text)


@dataclass(frozen=True)
class Paragraph:
    text: Text


@dataclass(frozen=True)
class BulletList:
    """Items, optionally under a lead line that belongs to them (no blank line between them in Markdown)."""

    items: list[Text]
    lead: Text = ()


@dataclass(frozen=True)
class Table:
    """Cells as shown (formatted). ``merged``: (label, first, second) column pairs that Markdown shows as one column
    ``label`` of "first / second" (where the first was), to keep a wide table readable; HTML shows both."""

    header: list[str]
    rows: list[list[str]]
    merged: list[tuple[str, str, str]] = field(default_factory=list)


Block = Paragraph | BulletList | Table


@dataclass(frozen=True)
class Section:
    heading: str
    blocks: list[Block]


@dataclass(frozen=True)
class Figure:
    """A plot written next to the report: ``title`` names it, ``caption`` adds its units and the selection."""

    path: Path
    title: str
    caption: Text


@dataclass
class Report:
    """The whole report. ``findings`` (best configurations, which differences are real) come before the figures in
    the HTML page, ``details`` (every configuration, every run) after them; report.md lists the figures last."""

    title: str
    lead: Text
    """What the numbers are and how configurations were chosen: the HTML page's first paragraph."""
    findings: list[Section] = field(default_factory=list)
    details: list[Section] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)

    def table(self, heading: str) -> Table | None:
        """The (first) table of the section ``heading``, or None."""
        for section in (*self.findings, *self.details):
            if section.heading == heading:
                return next((b for b in section.blocks if isinstance(b, Table)), None)
        return None


# --------------------------------------------------------------------------------------------------
# Built from the runs


@dataclass
class Study:
    """What the report is made from: the runs (as ``build.collect_runs`` returns them, with ``_model``), their
    configurations, the one chosen per method and base model (and how), and the intervals and tests (None when off
    or impossible)."""

    root: Path
    runs: list[dict[str, Any]]
    runs_table: Table
    configs: list[Configuration]
    chosen: dict[str, Configuration]
    how: str
    sig: Significance | None
    intervals: bool
    left_out: list[str] = field(default_factory=list)
    """Runs below ``root`` the statistics do not count (a damaged metrics.json, a repeat of a run), each with why."""

    @property
    def on_test(self) -> bool:
        """Chosen on test where there was a choice (a method with several configurations)."""
        return not self.how.startswith("chosen on validation") and len(self.configs) > len(self.chosen)


BEST = "Best configuration per method"
DIFFERENCES = "Which differences are real"
CONFIGURATIONS = "All configurations"
RUNS = "Runs"
PLOT_UNITS = "ROUGE-L: F-measure on the test tasks, 0–100"


def build_report(study: Study, plots: list[tuple[Path, str]]) -> Report:
    """The report of ``study``; ``plots``: the PNGs drawn for it, with their titles."""
    report = Report(f"peftbench report: {study.root}", inline(units_text(study.how)))
    ci_text = dt.interval_texts(study.sig)
    best_header, best_rows = best_table(study.chosen, ci_text)
    if best_rows:
        intro = study.how[0].upper() + study.how[1:] + "; mean ± std over seeds"
        intro += "; 95% CI: t interval over test tasks and training seeds." if ci_text else "."
        report.findings.append(Section(BEST, [Paragraph(inline(intro)), Table(best_header, best_rows)]))
    if (differences := _differences(study)) is not None:
        report.findings.append(differences)
    conf_header, conf_rows = configurations_table(study.configs, ci_text)
    if conf_rows:
        seeds = "/".join(map(str, sorted({len(c.runs) for c in study.configs})))
        count = Paragraph(plain(f"{len(study.configs)} configurations, {seeds} seed(s) each."))
        report.details.append(Section(CONFIGURATIONS, [count, Table(conf_header, conf_rows)]))
    lead = plain("Not counted in the statistics:")
    left_out = [BulletList([plain(n) for n in study.left_out], lead)] if study.left_out else []
    report.details.append(Section(RUNS, [study.runs_table, *_run_notes(study.runs), *left_out]))
    caption = f"{PLOT_UNITS}; {study.how}."
    report.figures = [Figure(path, title, inline(f"{title}. {caption}")) for path, title in plots]
    return report


def _differences(study: Study) -> Section | None:
    text = differences_text(study.sig, study.intervals, study.chosen, study.on_test)
    if not text:
        return None
    blocks: list[Block] = [Paragraph(inline(text))]
    header, rows = dt.differences_table(study.sig) if study.sig else ([], [])
    if rows:
        blocks.append(Table(header, rows))
    if study.sig and study.sig.notes:
        blocks.append(BulletList([plain(n) for n in study.sig.notes]))
    return Section(DIFFERENCES, blocks)


def _run_notes(runs: list[dict[str, Any]]) -> list[Block]:
    """Notes under the runs table: how methods count trainable parameters, what the peak-memory figures count."""
    blocks: list[Block] = []
    notes = sorted({f"{m['method']}: {m['trainable_params_note']}" for m in runs if m.get("trainable_params_note")})
    if notes:
        lead = inline("Trainable-parameter counts are the parameters trained and stored.")
        blocks.append(BulletList([plain(n) for n in notes], lead))
    kinds = {str(m.get("peak_memory_kind")) for m in runs}
    if kinds & {"tensor_bytes", "cuda_max_allocated"}:
        text = (
            "Peak memory is each run's own: the most bytes of tensor storage live at once while it trained (weights, "
            "gradients, optimizer state, activations; for the untrained base, while it generated). On GPU "
            "(*CUDA allocated*) it is the CUDA allocator's `max_memory_allocated`, reset when the run starts; on CPU "
            "(*tensors*) peftbench counts the storages operators allocate and free over the steps of the first and "
            "the largest batches (and the first evaluation batch), which leaves out memory a kernel uses only "
            "inside itself. Both leave out Python and the libraries' own memory."
        )
        blocks.append(Paragraph(inline(text)))
    if "cpu_peak_rss" in kinds:
        text = (
            "Runs marked *process RSS* (older results) recorded the process's peak resident set on CPU instead: it "
            "includes earlier work in the same process and is not comparable with the other figures."
        )
        blocks.append(Paragraph(inline(text)))
    return blocks


def units_text(how: str) -> str:
    """The lead paragraph: what the numbers are, in which units, and how configurations were chosen."""
    return (
        "Scores are SuperNI's official metrics on the test tasks: ROUGE-L (F-measure) and exact match (EM), each "
        "0–100 (averaged over instances, ×100). Trainable % is of the model's total parameters; train time in seconds; "
        "peak memory in MB (2^20 bytes: each run's own peak of tensor memory while training, see the Runs section). "
        f"Best configurations: {how}."
    )


def differences_text(sig: Significance | None, intervals: bool, chosen: dict[str, Configuration], on_test: bool) -> str:
    """The paragraph of the "Which differences are real" section (empty when there is nothing to say)."""
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
    return dt.explanation(sig, on_test)
