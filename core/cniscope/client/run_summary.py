"""A stored run as a client lists it, from the Runs API or from a recording."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cniscope.api.v1 import runs_pb2
from cniscope.core.benchmetrics import FigureStat
from cniscope.core.errors import CniscopeError


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
