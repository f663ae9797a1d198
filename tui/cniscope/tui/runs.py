"""Stored runs as the TUI shows them, and the side-by-side comparison with noise marks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cniscope.core.errors import CniscopeError

NOISE_FLOOR = 0.01  # relative change always treated as noise when runs carry no spread
HIGHER_IS_BETTER = ("_gbps", "_mbps", "qps", "conn_per_s", "_per_s")


class RunsUnavailable(CniscopeError):
    title = "runs unavailable"


@dataclass(frozen=True)
class FigureStat:
    median: float
    lo: float
    hi: float


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    label: str
    created: str = ""
    fingerprint: Mapping[str, str] = field(default_factory=dict)
    figures: Mapping[str, FigureStat] = field(default_factory=dict)


def run_from_dict(d: Mapping[str, Any]) -> RunSummary:
    figs: dict[str, FigureStat] = {}
    for name, v in dict(d.get("figures", {})).items():
        if isinstance(v, Mapping):
            m = float(v["median"])
            figs[str(name)] = FigureStat(m, float(v.get("min", m)), float(v.get("max", m)))
        else:
            figs[str(name)] = FigureStat(float(v), float(v), float(v))
    return RunSummary(str(d["id"]), str(d.get("label", d["id"])), str(d.get("created", "")),
                      {str(k): str(v) for k, v in dict(d.get("fingerprint", {})).items()}, figs)


def higher_is_better(name: str) -> bool:
    return any(name.endswith(s) or s in name for s in HIGHER_IS_BETTER)


@dataclass(frozen=True)
class Delta:
    pct: float | None
    verdict: str  # better | worse | noise | n/a


def delta(base: FigureStat | None, other: FigureStat | None, name: str) -> Delta:
    if base is None or other is None:
        return Delta(None, "n/a")
    diff = other.median - base.median
    pct = diff / base.median * 100 if base.median else None
    spread = max(base.hi - base.lo, other.hi - other.lo)
    # overlapping min..max ranges, or a change below the floor: not an improvement, just noise
    overlap = other.lo <= base.hi and base.lo <= other.hi and spread > 0
    if overlap or abs(diff) <= NOISE_FLOOR * abs(base.median):
        return Delta(pct, "noise")
    good = diff > 0 if higher_is_better(name) else diff < 0
    return Delta(pct, "better" if good else "worse")


def comparison(runs: Sequence[RunSummary]) -> list[tuple[str, list[FigureStat | None], list[Delta]]]:
    """Rows (figure, value per run, delta of each later run against the first)."""
    names: list[str] = []
    for r in runs:
        names.extend(n for n in r.figures if n not in names)
    rows = []
    for n in names:
        vals = [r.figures.get(n) for r in runs]
        rows.append((n, vals, [delta(vals[0], v, n) for v in vals[1:]]))
    return rows
