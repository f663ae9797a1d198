"""Published benchmark figures shipped as data, so a run can be put beside them.

``report-2026-02`` is the February 2026 EKS 1.31 study (m6i.xlarge, Cilium 1.16.5, median of ≥3 runs),
scenarios A–E; each figure names the place in the report it came from. A spec is ``NAME`` (every
scenario) or ``NAME:E`` / ``NAME:A,E``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cniscope.collector.reports.report_model import RunView
from cniscope.core import benchmetrics as bm
from cniscope.core.errors import NotFound, ValidationError

HERE = Path(__file__).resolve().parent
KNOWN = {"report-2026-02": "report_2026_02.json"}


@dataclass(frozen=True)
class Headline:
    name: str
    metric: str
    frm: str
    to: str
    before: float
    after: float
    pct: float
    stated: str
    reproduced: bool

    def text(self) -> str:
        mark = "reproduced" if self.reproduced else "NOT reproduced"
        return (f"{self.name}: {bm.fmt(self.metric, self.before)} → {bm.fmt(self.metric, self.after)} "
                f"({bm.fmt_pct(self.pct)}; published {self.stated}) {mark}")


def raw(name: str = "report-2026-02") -> dict[str, Any]:
    try:
        fname = KNOWN[name]
    except KeyError:
        raise NotFound(f"unknown reference {name!r}; known: {', '.join(KNOWN)}") from None
    doc: dict[str, Any] = json.loads((HERE / fname).read_text())
    return doc


def scenarios(name: str = "report-2026-02") -> list[RunView]:
    doc = raw(name)
    figs: dict[str, dict[str, bm.FigureStat]] = {s: {} for s in doc["scenarios"]}
    for f in doc["figures"]:
        bm.parse_key(f["metric"])
        for s, v in f["values"].items():
            figs[s][f["metric"]] = bm.FigureStat.from_dict(v)
    out = []
    for s, meta in doc["scenarios"].items():
        fp = {"reference": f"{name} ({doc['provenance']['platform']}, {doc['provenance']['node_type']})",
              **meta["fingerprint"]}
        out.append(RunView(id=f"{name}:{s}", label=f"{meta['label']} (published)", figures=figs[s],
                           fingerprint=fp, source="reference", suite="published", repeat=3))
    return out


def parse_spec(spec: str) -> list[RunView]:
    """``report-2026-02`` → all scenarios; ``report-2026-02:E`` or ``:A,E`` → those."""
    name, _, which = spec.partition(":")
    views = scenarios(name)
    if not which:
        return views
    by = {v.id.rsplit(":", 1)[1]: v for v in views}
    out = []
    for s in which.split(","):
        s = s.strip().upper()
        if s not in by:
            raise ValidationError(f"{name} has scenarios {', '.join(by)}, not {s!r}")
        out.append(by[s])
    return out


def _round_like(pct: float, stated: float) -> bool:
    """The published percentages are whole numbers: reproduce them to that rounding."""
    return math.floor(abs(pct) + 0.5) == abs(stated) and (pct < 0) == (stated < 0)


def headlines(name: str = "report-2026-02") -> list[Headline]:
    doc = raw(name)
    by = {v.id.rsplit(":", 1)[1]: v for v in scenarios(name)}
    out = []
    for h in doc["headlines"]:
        a, b = by[h["from"]].figures[h["metric"]].median, by[h["to"]].figures[h["metric"]].median
        pct = (b - a) / a * 100.0
        if "stated_pct" in h:
            stated = f"{h['stated_pct']:+d}%"
            ok = _round_like(pct, h["stated_pct"])
        else:
            x, y = h["stated_values"]
            stated = f"{x:g} → {y:g}"
            ok = (a, b) == (x, y)
        out.append(Headline(h["name"], h["metric"], h["from"], h["to"], a, b, pct, stated, ok))
    return out


def scaling(name: str = "report-2026-02") -> dict[str, Any]:
    s: dict[str, Any] = raw(name)["scaling"]
    return s
