"""The comparison as terminal tables, deltas coloured by direction (green better, red worse)."""

from __future__ import annotations

from cniscope.collector.reports.report_model import Comparison, Row
from cniscope.core import benchmetrics as bm
from cniscope.core.render import table

_COLORS = {bm.BETTER: "\x1b[32m", bm.WORSE: "\x1b[31m", bm.NOISE: "\x1b[2m", bm.NA: "\x1b[2m"}
_RESET = "\x1b[0m"
FINGERPRINT_KEYS = ("reference", "environment", "service_path", "cni", "kube_proxy", "kube_proxy_backend", "routing",
                    "ipam", "tuning", "kernel", "node_type", "nodes", "nat_rules_per_node", "note")


def delta_text(d: bm.Delta | None) -> str:
    if d is None:
        return "baseline"
    if d.verdict == bm.NA:
        return "-"
    if d.verdict == bm.NOISE:
        return f"{bm.fmt_pct(d.pct)} within noise" if d.pct is not None else "within noise"
    return f"{bm.fmt_pct(d.pct)} {d.verdict}" if d.pct is not None else d.verdict


def _cells(row: Row, baseline: int, color: bool) -> list[str]:
    out = [f"{row.metric.title} ({'↓' if row.metric.better == bm.LOWER else '↑'})"]
    for i, v in enumerate(row.values):
        out.append(bm.fmt(row.key, v.median if v else None))
        if i != baseline:
            d = row.deltas[i]
            s = delta_text(d)
            if color and d is not None:
                s = _COLORS[d.verdict] + s + _RESET
            out.append(s)
    return out


def render_table(c: Comparison, *, color: bool = False) -> str:
    heads = ["metric (↓ lower / ↑ higher is better)"]
    for i, r in enumerate(c.runs):
        heads.append(r.label + (" [baseline]" if i == c.baseline and len(c.runs) > 1 else ""))
        if i != c.baseline:
            heads.append("Δ vs baseline")
    out: list[str] = []
    for title, rows in c.tables:
        out.append(title)
        out.append(table(heads, [_cells(r, c.baseline, color) for r in rows], "l" + "r" * (len(heads) - 1)))
        out.append("")
    for r in c.runs:
        if r.fingerprint:  # the headline fields; every field is in the JSON and HTML renderings
            shown = [k for k in FINGERPRINT_KEYS if k in r.fingerprint] or list(r.fingerprint)
            out.append(f"{r.label}: " + ", ".join(f"{k}={r.fingerprint[k]}" for k in shown))
        for item, why in r.skipped:
            out.append(f"{r.label}: skipped {item}: {why}")
    if c.headlines:
        out.append("")
        out.append("headline deltas:")
        out.extend(f"  {h['text']}" for h in c.headlines)
    for n in c.notes:
        out.append(n)
    if c.gates:
        out.append("")
        for g in c.gates:
            out.append(f"{'FAIL' if g.crossed else 'pass'} {g.run}: {g.why}")
    return "\n".join(out).rstrip() + "\n"
