"""``report.md``: a :class:`~peftbench.reporting.model.Report` as GitHub-flavoured Markdown.

The title, then every section (findings, then details), each block followed by a blank line, then the figures as
image links. Plain text is written as it is; emphasis as ``*x*``, ``**x**``, `` `x` ``.
"""

from __future__ import annotations

from peftbench.reporting.model import Block, BulletList, Paragraph, Report, Section, Table, Text

_MARKS = {"": "", "em": "*", "strong": "**", "code": "`"}


def text(spans: Text) -> str:
    return "".join(f"{_MARKS[s.style]}{s.text}{_MARKS[s.style]}" for s in spans)


def table(t: Table) -> str:
    """A GitHub-flavoured table; each of ``t.merged`` is one "first / second" column where its first column was."""
    columns: list[tuple[str, list[int]]] = []
    second = {b for _, _, b in t.merged}
    merged = {a: (label, b) for label, a, b in t.merged}
    for i, name in enumerate(t.header):
        if name in merged:
            label, b = merged[name]
            columns.append((label, [i, t.header.index(b)]))
        elif name not in second:
            columns.append((name, [i]))
    lines = ["| " + " | ".join(name for name, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in t.rows:
        lines.append("| " + " | ".join(" / ".join(row[i] for i in at) for _, at in columns) + " |")
    return "\n".join(lines)


def block(b: Block) -> str:
    if isinstance(b, Table):
        return table(b)
    if isinstance(b, BulletList):
        items = "\n".join(f"- {text(item)}" for item in b.items)
        return f"{text(b.lead)}\n{items}" if b.lead else items
    if isinstance(b, Paragraph):
        return text(b.text)
    raise TypeError(f"no Markdown for {type(b).__name__}")


def section(s: Section) -> str:
    return f"## {s.heading}\n\n" + "".join(block(b) + "\n\n" for b in s.blocks)


def render(report: Report) -> str:
    """The whole of ``report.md``."""
    body = "".join(section(s) for s in (*report.findings, *report.details))
    figures = "".join(f"![{f.title}]({f.path.name})\n" for f in report.figures)
    return f"# {report.title}\n\n{body}{figures}"
