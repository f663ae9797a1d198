"""The comparison as JSON: every run with its figures (median, min, max, n), deltas and gates."""

from __future__ import annotations

import json
from typing import Any

from cniscope.collector.reports.report_model import Comparison


def to_obj(c: Comparison) -> dict[str, Any]:
    tables = []
    for title, rows in c.tables:
        trows = []
        for r in rows:
            trows.append({
                "metric": r.key, "title": r.metric.title, "unit": r.metric.unit, "better": r.metric.better,
                "values": [v.to_dict() if v else None for v in r.values],
                "deltas": [None if d is None else {"abs": d.abs, "pct": d.pct, "verdict": d.verdict}
                           for d in r.deltas],
            })
        tables.append({"title": title, "rows": trows})
    return {
        "runs": [r.to_dict() for r in c.runs],
        "baseline": c.runs[c.baseline].id,
        "tables": tables,
        "headlines": c.headlines,
        "gates": [{"threshold": g.text, "run": g.run, "crossed": g.crossed, "why": g.why} for g in c.gates],
        "failed": [g.text for g in c.failed],
        "notes": c.notes,
    }


def render_json(c: Comparison) -> str:
    return json.dumps(to_obj(c), indent=2, ensure_ascii=False) + "\n"
