"""Stored runs as the TUI shows them, and the side-by-side comparison with noise marks (the
statistics, the metric catalog and the noise rule are core.benchmetrics'; this adds direction and
formatting for figure names outside the catalog)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cniscope.api.v1 import runs_pb2
from cniscope.core import benchmetrics as bm
from cniscope.core.benchmetrics import Delta, FigureStat, delta
from cniscope.core.errors import CniscopeError, ValidationError
from cniscope.core.render import fmt_figure

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
    status: str = ""    # running | done | cancelled | failed ("" when the source does not say)


def run_from_dict(d: Mapping[str, Any]) -> RunSummary:
    figs = {str(name): FigureStat.from_dict(v) for name, v in dict(d.get("figures", {})).items()}
    return RunSummary(str(d["id"]), str(d.get("label", d["id"])), str(d.get("created", "")),
                      {str(k): str(v) for k, v in dict(d.get("fingerprint", {})).items()}, figs,
                      str(d.get("status", "")))


def run_to_dict(r: RunSummary) -> dict[str, Any]:
    """The recording form of a run (``run_from_dict`` reads it back)."""
    return {"id": r.run_id, "label": r.label, "created": r.created, "status": r.status,
            "fingerprint": dict(r.fingerprint), "figures": {k: v.to_dict() for k, v in r.figures.items()}}


def run_from_proto(r: runs_pb2.Run) -> RunSummary:
    """A run as the collector's Runs API stores it."""
    created = ""
    if r.started_unix_nano:
        created = dt.datetime.fromtimestamp(r.started_unix_nano / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    status = runs_pb2.RunStatus.Name(r.status).removeprefix("RUN_STATUS_").lower() if r.status else ""
    figs = {k: FigureStat(v.median, v.min, v.max, v.n or 1) for k, v in r.figures.items()}
    return RunSummary(r.run_id, r.label or r.run_id, created, dict(r.fingerprint), figs, status)


def in_catalog(name: str) -> bool:
    try:
        bm.parse_key(name)
    except ValidationError:
        return False
    return True


def higher_is_better(name: str) -> bool:
    return any(name.endswith(s) or s in name for s in HIGHER_IS_BETTER)


def title(name: str) -> str:
    """How a figure is named in the comparison: the catalog's title, else its key."""
    return bm.metric(name).title if in_catalog(name) else name


def fmt_value(name: str, value: float) -> str:
    return bm.fmt(name, value) if in_catalog(name) else fmt_figure(name, value)


def comparison(runs: Sequence[RunSummary]) -> list[tuple[str, list[FigureStat | None], list[Delta]]]:
    """Rows (figure, value per run, delta of each later run against the first); catalog figures in
    the report's order, the others after them as the runs list them."""
    names: list[str] = []
    for r in runs:
        names.extend(n for n in r.figures if n not in names)
    names.sort(key=lambda n: bm.sort_key(n)[:3])  # stable: figures outside the catalog keep their order
    rows = []
    for n in names:
        vals = [r.figures.get(n) for r in runs]
        direction = None if in_catalog(n) else higher_is_better(n)
        rows.append((n, vals, [delta(n, vals[0], v, direction) for v in vals[1:]]))
    return rows
