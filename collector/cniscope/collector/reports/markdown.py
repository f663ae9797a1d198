"""The comparison as Markdown tables (for a pull request or a wiki page)."""

from __future__ import annotations

from cniscope.collector.reports.report_model import Comparison
from cniscope.collector.reports.text import delta_text
from cniscope.core import benchmetrics as bm

_ICON = {bm.BETTER: "🟢 ", bm.WORSE: "🔴 ", bm.NOISE: "", bm.NA: ""}


def _esc(s: str) -> str:
    return s.replace("|", "\\|")


def render_markdown(c: Comparison) -> str:
    heads = ["Metric"]
    for i, r in enumerate(c.runs):
        heads.append(_esc(r.label) + (" (baseline)" if i == c.baseline and len(c.runs) > 1 else ""))
        if i != c.baseline:
            heads.append("Δ")
    out = ["# cniscope comparison", ""]
    for title, rows in c.tables:
        out += [f"## {title}", "", "| " + " | ".join(heads) + " |",
                "|" + "|".join(["---"] + ["---:"] * (len(heads) - 1)) + "|"]
        for row in rows:
            cells = [f"{row.metric.title} ({'lower' if row.metric.better == bm.LOWER else 'higher'} is better)"]
            for i, v in enumerate(row.values):
                cells.append(bm.fmt(row.key, v.median if v else None))
                if i != c.baseline:
                    d = row.deltas[i]
                    cells.append((_ICON[d.verdict] if d else "") + delta_text(d))
            out.append("| " + " | ".join(_esc(x) for x in cells) + " |")
        out.append("")
    if c.headlines:
        out += ["## Headline deltas", ""] + [f"- {h['text']}" for h in c.headlines] + [""]
    out += ["## Runs", ""]
    for r in c.runs:
        fp = ", ".join(f"{k}={v}" for k, v in r.fingerprint.items())
        out.append(f"- **{_esc(r.label)}** (`{r.id}`): {_esc(fp) or 'no fingerprint'}")
        out.extend(f"  - skipped {i}: {_esc(w)}" for i, w in r.skipped)
    if c.gates:
        out += ["", "## Gates", ""]
        out += [f"- {'❌ FAIL' if g.crossed else '✅ pass'} {_esc(g.run)}: {_esc(g.why)}" for g in c.gates]
    out.extend(c.notes)
    return "\n".join(out).rstrip() + "\n"
