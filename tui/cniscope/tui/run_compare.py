"""Stored runs as the TUI shows them, and the side-by-side comparison with noise marks (the
statistics, the metric catalog and the noise rule are core.benchmetrics'; this adds direction and
formatting for figure names outside the catalog)."""

from __future__ import annotations

from collections.abc import Sequence

from cniscope.client.run_summary import RunSummary
from cniscope.core import benchmetrics as bm
from cniscope.core.benchmetrics import Delta, FigureStat, delta
from cniscope.core.errors import ValidationError
from cniscope.core.render import fmt_figure

HIGHER_IS_BETTER = ("_gbps", "_mbps", "qps", "conn_per_s", "_per_s")


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
