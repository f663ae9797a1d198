"""Reports: terminal table, JSON, Markdown and a self-contained HTML page with inline SVG charts."""

from __future__ import annotations

from cniscope.collector.reports.report_model import Comparison

FORMATS = ("table", "json", "markdown", "html")


def render(c: Comparison, fmt: str, *, color: bool = False) -> str:
    if fmt == "table":
        from cniscope.collector.reports.text import render_table

        return render_table(c, color=color)
    if fmt == "json":
        from cniscope.collector.reports.jsonout import render_json

        return render_json(c)
    if fmt == "markdown":
        from cniscope.collector.reports.markdown import render_markdown

        return render_markdown(c)
    if fmt == "html":
        from cniscope.collector.reports.html import render_html

        return render_html(c)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
