"""One self-contained HTML page: the comparison tables and a bar chart per figure, inline SVG only."""

from __future__ import annotations

import html

from cniscope.collector.reports import svg
from cniscope.collector.reports.report_model import Comparison
from cniscope.collector.reports.text import delta_text
from cniscope.core import benchmetrics as bm

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px}
td.n{text-align:right;font-variant-numeric:tabular-nums}.better{color:#1a7f37;font-weight:bold}
.worse{color:#cf222e;font-weight:bold}.noise,.na{color:#888}.fail{color:#cf222e}.pass{color:#1a7f37}
.charts{display:flex;flex-wrap:wrap;gap:12px}
"""
_CLASS = {bm.BETTER: "better", bm.WORSE: "worse", bm.NOISE: "noise", bm.NA: "na"}


def page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def render_html(c: Comparison) -> str:
    e = html.escape
    labels = [r.label for r in c.runs]
    b: list[str] = [f"<h1>cniscope comparison</h1><p>{len(c.runs)} runs; baseline: "
                    f"<b>{e(c.runs[c.baseline].label)}</b></p>"]
    for title, rows in c.tables:
        b.append(f"<h2>{e(title)}</h2><table><tr><th>metric</th>")
        for i, lab in enumerate(labels):
            b.append(f"<th>{e(lab)}</th>" + ("" if i == c.baseline else "<th>Δ</th>"))
        b.append("</tr>")
        for row in rows:
            arrow = "lower is better" if row.metric.better == bm.LOWER else "higher is better"
            b.append(f"<tr><td>{e(row.metric.title)} <small>({e(arrow)})</small></td>")
            for i, v in enumerate(row.values):
                spread = f' title="min {v.lo:g}, max {v.hi:g}, n={v.n}"' if v else ""
                b.append(f'<td class="n"{spread}>{e(bm.fmt(row.key, v.median if v else None))}</td>')
                if i != c.baseline:
                    d = row.deltas[i]
                    cls = _CLASS[d.verdict] if d else "na"
                    b.append(f'<td class="n {cls}">{e(delta_text(d))}</td>')
            b.append("</tr>")
        b.append("</table><div class=\"charts\">")
        for row in rows:
            b.append(svg.bars(row.metric.title, labels, [v.median if v else None for v in row.values],
                              unit=row.metric.unit, lo=[v.lo if v else None for v in row.values],
                              hi=[v.hi if v else None for v in row.values],
                              subtitle=f"{row.key} · {'lower' if row.metric.better == bm.LOWER else 'higher'} "
                                       "is better · bar = median, line = min–max"))
        b.append("</div>")
    if c.headlines:
        b.append("<h2>Headline deltas</h2><ul>" + "".join(f"<li>{e(h['text'])}</li>" for h in c.headlines) + "</ul>")
    b.append("<h2>Runs</h2><ul>")
    for r in c.runs:
        fp = ", ".join(f"{k}={v}" for k, v in r.fingerprint.items())
        b.append(f"<li><b>{e(r.label)}</b> <code>{e(r.id)}</code>: {e(fp)}")
        if r.skipped:
            b.append("<ul>" + "".join(f"<li>skipped {e(i)}: {e(w)}</li>" for i, w in r.skipped) + "</ul>")
        b.append("</li>")
    b.append("</ul>")
    if c.gates:
        b.append("<h2>Gates</h2><ul>" + "".join(
            f'<li class="{"fail" if g.crossed else "pass"}">{"FAIL" if g.crossed else "pass"} '
            f"{e(g.run)}: {e(g.why)}</li>" for g in c.gates) + "</ul>")
    b.extend(f"<p>{e(n)}</p>" for n in c.notes)
    return page("cniscope comparison", "".join(b))
