"""``report.html``: a :class:`~peftbench.reporting.model.Report` as one self-contained page (plots embedded, no
external resources; wide tables scroll inside the page at laptop width).

The title, the lead paragraph, the findings, the figures, then the details: the plots come before the long tables.
Every text is HTML-escaped; emphasis becomes ``<em>``, ``<strong>``, ``<code>``.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from peftbench.reporting.model import Block, BulletList, Figure, Paragraph, Report, Section, Table, Text, text_of

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;
margin:1em 0;font-size:0.85em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}
img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:0.85em}"""
PAGE_CSS = "table{display:block;max-width:100%;overflow-x:auto}.units{color:#333;font-size:0.9em}"


def text(spans: Text) -> str:
    return "".join(f"<{s.style}>{html.escape(s.text)}</{s.style}>" if s.style else html.escape(s.text) for s in spans)


def table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in t.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def block(b: Block) -> str:
    if isinstance(b, Table):
        return table(b)
    if isinstance(b, BulletList):
        items = "<ul>" + "".join(f"<li>{text(item)}</li>" for item in b.items) + "</ul>"
        return f"<p>{text(b.lead)}</p>\n{items}" if b.lead else items
    if isinstance(b, Paragraph):
        return f"<p>{text(b.text)}</p>"
    raise TypeError(f"no HTML for {type(b).__name__}")


def section(s: Section) -> list[str]:
    return [f"<h2>{html.escape(s.heading)}</h2>", *(block(b) for b in s.blocks)]


def image(path: Path, alt: str, caption: str) -> str:
    """A <figure> with the PNG embedded, so the page is one self-contained file; ``caption`` is HTML already."""
    data = base64.b64encode(path.read_bytes()).decode()
    img = f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
    return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"


def figure(f: Figure) -> str:
    return image(f.path, text_of(f.caption), text(f.caption))


def render(report: Report) -> str:
    """The whole of ``report.html``."""
    title = html.escape(report.title)
    page = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<style>{CSS}{PAGE_CSS}</style></head><body><h1>{title}</h1>",
        f"<p class='units'>{text(report.lead)}</p>",
    ]
    for s in report.findings:
        page += section(s)
    page += [figure(f) for f in report.figures]
    for s in report.details:
        page += section(s)
    return "\n".join([*page, "</body></html>"])
