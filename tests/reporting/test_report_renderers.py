"""report.md and report.html are two layouts of one model (issue 27): emphasis that Markdown writes as ``*x*`` is an
element in HTML, never raw asterisks; everything from the runs is escaped; both show the same sections and tables."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from peftbench.reporting import html, markdown
from peftbench.reporting.build import write_report
from peftbench.reporting.model import BulletList, Paragraph, Span, Table, inline, plain
from tests.reporting.test_report_intervals import _run


class _Page(HTMLParser):
    """The page's text nodes (outside <style>), its headings, tables (header cells) and image alt texts."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.headings: list[str] = []
        self.tables: list[list[str]] = []
        self.alts: list[str] = []
        self.stack: list[str] = []
        self.emphasis: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        if tag == "img":
            self.alts.append(dict(attrs)["alt"])

    def handle_endtag(self, tag):
        self.stack.pop()

    def handle_data(self, data):
        tag = self.stack[-1] if self.stack else ""
        if tag == "style":
            return
        self.texts.append(data)
        if tag == "h2":
            self.headings.append(data)
        if tag == "th":
            self.tables[-1].append(data)
        if tag == "em":
            self.emphasis.append(data)


@pytest.fixture
def without_validation(tmp_path) -> Path:
    """Runs without validation scores: the selection says it used the *test* score, with emphasis."""
    root = tmp_path / "runs"
    for seed in (1, 2):
        _run(root, "full", seed, 0.8, val=40)
        _run(root, "lora", seed, 0.7, val=39)
        _run(root, "lora", seed, 0.5, lr=1e-4, val=20)
    for path in root.rglob("metrics.json"):
        metrics = json.loads(path.read_text())
        metrics["train"]["validation"] = []
        if metrics["method"] == "lora":
            metrics["trainable_params_note"] = "counts 2*r*d <not> *all*"  # from the runs: plain text, escaped
        path.write_text(json.dumps(metrics))
    return root


def _page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def test_html_shows_emphasis_as_elements_not_asterisks(without_validation, tmp_path):
    files = write_report(without_validation, tmp_path / "out")
    text = files.markdown.read_text()
    assert "best mean *test* score" in text
    page = _page(files.html)
    source = files.html.read_text()
    assert "best mean <em>test</em> score" in source
    assert page.emphasis.count("test") >= 1 + len(files.plots) + 1  # intro, every caption, the lead paragraph
    stray = [t for t in page.texts if "*" in t and "2*r*d" not in t]
    assert stray == [], stray
    assert all("*" not in alt for alt in page.alts), page.alts
    # text from the runs is shown as it is: escaped, never read as markup
    assert "counts 2*r*d &lt;not&gt; *all*" in source and "<not>" not in source and "<em>all</em>" not in source


def test_markdown_and_html_show_the_same_sections_and_tables(without_validation, tmp_path):
    files = write_report(without_validation, tmp_path / "out")
    text = files.markdown.read_text()
    page = _page(files.html)
    assert page.headings == re.findall(r"^## (.+)$", text, flags=re.M)
    lines = text.splitlines()
    md_tables = [lines[i - 1] for i, line in enumerate(lines) if line.startswith("|---")]
    assert len(md_tables) == len(page.tables) == 4  # best, differences, configurations, runs
    for line, html_header in zip(md_tables, page.tables, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        merged = [c for c in cells if c.endswith("(EM / RL)")]
        assert len(cells) == len(html_header) - len(merged), (cells, html_header)
    shown = " ".join(page.texts)
    for paragraph in (
        "3 configurations, 2 seed(s) each.",
        "Trainable-parameter counts are the parameters trained and stored.",
    ):
        assert paragraph in text and paragraph in shown
    assert [Path(p).name for p in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)] == [p.name for p in files.plots]
    assert len(page.alts) == len(files.plots)


def test_inline_markup_round_trips_to_markdown_and_becomes_elements_in_html():
    source = "a *b* and **c** with `d` < e, 2 * 3 and a lone *"
    spans = inline(source)
    assert Span("b", "em") in spans and Span("c", "strong") in spans and Span("d", "code") in spans
    assert markdown.text(spans) == source
    assert html.text(spans) == ("a <em>b</em> and <strong>c</strong> with <code>d</code> &lt; e, 2 * 3 and a lone *")
    assert html.text(plain("*x*")) == "*x*" and markdown.text(plain("*x*")) == "*x*"


def test_blocks_render_alike():
    table = Table(
        ["run", "EM a", "ROUGE-L a", "x"], [["r1", "1.00", "2.00", "<y>"]], [("a (EM / RL)", "EM a", "ROUGE-L a")]
    )
    assert markdown.table(table) == "| run | a (EM / RL) | x |\n|---|---|---|\n| r1 | 1.00 / 2.00 | <y> |"
    assert "<td>&lt;y&gt;</td>" in html.table(table) and html.table(table).count("<th>") == 4
    notes = BulletList([plain("lora: n")], inline("Counts are *trained*."))
    assert markdown.block(notes) == "Counts are *trained*.\n- lora: n"
    assert html.block(notes) == "<p>Counts are <em>trained</em>.</p>\n<ul><li>lora: n</li></ul>"
    assert html.block(Paragraph(inline("`a&b`"))) == "<p><code>a&amp;b</code></p>"
