"""What a report shows: runs (stored or published) as labelled figure sets, and their comparison."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cniscope.core import benchmetrics as bm


@dataclass(frozen=True)
class RunView:
    id: str
    label: str
    figures: Mapping[str, bm.FigureStat]
    fingerprint: Mapping[str, str] = field(default_factory=dict)
    created_ns: int = 0
    source: str = "run"            # run | reference
    suite: str = ""
    repeat: int = 0
    status: str = "done"
    skipped: Sequence[tuple[str, str]] = ()   # (suite item, reason)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "source": self.source, "suite": self.suite,
                "repeat": self.repeat, "status": self.status, "created_unix_nano": self.created_ns,
                "fingerprint": dict(self.fingerprint),
                "figures": {k: v.to_dict() for k, v in sorted(self.figures.items(), key=lambda kv: bm.sort_key(kv[0]))},
                "skipped": [{"item": i, "reason": r} for i, r in self.skipped]}


@dataclass(frozen=True)
class Row:
    key: str
    metric: bm.Metric
    values: list[bm.FigureStat | None]
    deltas: list[bm.Delta | None]   # against the baseline; None in the baseline's own column


@dataclass(frozen=True)
class Gate:
    text: str
    crossed: bool
    why: str
    run: str


@dataclass(frozen=True)
class Comparison:
    runs: list[RunView]
    baseline: int
    tables: list[tuple[str, list[Row]]]
    gates: list[Gate] = field(default_factory=list)
    headlines: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Gate]:
        return [g for g in self.gates if g.crossed]


def compare(runs: Sequence[RunView], baseline: int = 0, thresholds: Sequence[bm.Threshold] = ()) -> Comparison:
    """The report's tables side by side; each figure's delta against the baseline run."""
    if not runs:
        raise ValueError("nothing to compare")
    if not 0 <= baseline < len(runs):
        raise ValueError("baseline out of range")
    keys = sorted({k for r in runs for k in r.figures}, key=bm.sort_key)
    tables: dict[str, list[Row]] = {}
    for k in keys:
        try:
            m = bm.metric(k)
        except Exception:  # a figure this version does not know: shown under "other"
            m = bm.Metric(k, k, "", bm.LOWER, "other")
        vals = [r.figures.get(k) for r in runs]
        base = vals[baseline]
        deltas = [None if i == baseline else bm.delta(k, base, v) for i, v in enumerate(vals)]
        tables.setdefault(m.table, []).append(Row(k, m, vals, deltas))
    gates = []
    for i, r in enumerate(runs):
        if i == baseline:
            continue
        for t, crossed, why in bm.evaluate(thresholds, runs[baseline].figures, r.figures):
            gates.append(Gate(t.text, crossed, why, r.label))
    if len(runs) == 1 and thresholds:  # absolute thresholds still apply to a single run
        for t, crossed, why in bm.evaluate(thresholds, None, runs[0].figures):
            gates.append(Gate(t.text, crossed, why, runs[0].label))
    return Comparison(list(runs), baseline, list(tables.items()), gates)
