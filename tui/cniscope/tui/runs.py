"""Stored runs as the TUI shows them, and the side-by-side comparison with noise marks (the
statistics and the noise rule are core.benchmetrics'; this adds direction for figure names
outside its catalog)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cniscope.core.benchmetrics import Delta, FigureStat, delta
from cniscope.core.errors import CniscopeError

HIGHER_IS_BETTER = ("_gbps", "_mbps", "qps", "conn_per_s", "_per_s")


class RunsUnavailable(CniscopeError):
    title = "runs unavailable"


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    label: str
    created: str = ""
    fingerprint: Mapping[str, str] = field(default_factory=dict)
    figures: Mapping[str, FigureStat] = field(default_factory=dict)


def run_from_dict(d: Mapping[str, Any]) -> RunSummary:
    figs = {str(name): FigureStat.from_dict(v) for name, v in dict(d.get("figures", {})).items()}
    return RunSummary(str(d["id"]), str(d.get("label", d["id"])), str(d.get("created", "")),
                      {str(k): str(v) for k, v in dict(d.get("fingerprint", {})).items()}, figs)


def higher_is_better(name: str) -> bool:
    return any(name.endswith(s) or s in name for s in HIGHER_IS_BETTER)


def comparison(runs: Sequence[RunSummary]) -> list[tuple[str, list[FigureStat | None], list[Delta]]]:
    """Rows (figure, value per run, delta of each later run against the first)."""
    names: list[str] = []
    for r in runs:
        names.extend(n for n in r.figures if n not in names)
    rows = []
    for n in names:
        vals = [r.figures.get(n) for r in runs]
        rows.append((n, vals, [delta(n, vals[0], v, higher_is_better(n)) for v in vals[1:]]))
    return rows
