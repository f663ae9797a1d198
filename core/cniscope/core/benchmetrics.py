"""Benchmark figures as data: the metric catalog, per-figure statistics over repetitions, deltas with
direction and noise, and ``--fail-if`` thresholds.

Pure functions only, shared by the collector (runs, reports, the Compare API), the CLI and the TUI.

Metric keys are ``<group>.<figure>``: ``tcp.gbps``, ``udp.loss_pct``, ``rtt.p50``, ``http@1000.p99``,
``httpmax.qps``, ``dns.p99``, ``cni.cpu_m``, ``nat.rules``. A group may carry a parameter after ``@``
(the fixed QPS of an HTTP figure), so ``http@1000.p99`` and ``http@5000.p99`` are different figures.
The probes' groups, their figures, units and directions are the probe table's (``probekinds``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cniscope.core import stats
from cniscope.core.errors import ValidationError
from cniscope.core.probekinds import KINDS
from cniscope.core.probespec import HIGHER as HIGHER  # the directions, as the probe table names them
from cniscope.core.probespec import LOWER as LOWER


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    better: str        # lower | higher
    table: str         # the report table it belongs to
    digits: int = 2


@dataclass(frozen=True)
class _Figure:
    title: str
    unit: str
    better: str
    digits: int


# Groups that no probe fills: the CNI agent's samples and the agents' iptables/nft census.
_NODE_GROUPS: dict[str, tuple[str, dict[str, _Figure]]] = {
    "cni": ("CNI agent footprint (per node, under load)",
            {"cpu_m": _Figure("CNI CPU", "millicores", LOWER, 1),
             "mem_mib": _Figure("CNI memory", "MiB", LOWER, 0)}),
    "nat": ("NAT rules", {"rules": _Figure("iptables NAT rules", "rules", LOWER, 0)}),
}
_KEY = re.compile(r"^([a-z][a-z0-9_]*)(?:@(\d+))?\.([a-z][a-z0-9_]*)$")


def _groups() -> dict[str, tuple[str, dict[str, _Figure]]]:
    """group → (table title, {figure → how to show it}), in the report's table order: the probe
    kinds' benchmark groups as the probe table declares them, then the node groups."""
    out: dict[str, tuple[str, dict[str, _Figure]]] = {}
    for spec in KINDS:
        for b in spec.benchmarks:
            figs = {}
            for bf in b.figures:
                f = spec.figure(bf.figure)
                figs[bf.metric] = _Figure(bf.title or f.title, f.unit, f.better, bf.digits)
            out[b.group] = (b.table, figs)
    out.update(_NODE_GROUPS)
    return out


def _arg_groups() -> set[str]:
    return {b.group for spec in KINDS for b in spec.benchmarks if b.arg_param}


def parse_key(key: str) -> tuple[str, str, str]:
    """``http@1000.p99`` → ("http", "1000", "p99"); raises ValidationError for an unknown metric."""
    m = _KEY.match(key)
    groups = _groups()
    if not m or m.group(1) not in groups or m.group(3) not in groups[m.group(1)][1]:
        raise ValidationError(f"unknown metric {key!r}; known: {', '.join(known_keys())}")
    return m.group(1), m.group(2) or "", m.group(3)


def metric(key: str) -> Metric:
    group, arg, fig = parse_key(key)
    table, figs = _groups()[group]
    f = figs[fig]
    title = f"{f.title} @{int(arg):,} QPS" if arg else f.title
    table = f"{table} ({int(arg):,} QPS)" if arg else table
    return Metric(key, title, f.unit, f.better, table, f.digits)


def known_keys() -> list[str]:
    out: list[str] = []
    with_arg = _arg_groups()
    for g, (_, figs) in _groups().items():
        out.extend(f"{g}@1000.{f}" if g in with_arg else f"{g}.{f}" for f in figs)
    return out


def sort_key(key: str) -> tuple[int, int, int, str]:
    try:
        group, arg, fig = parse_key(key)
    except ValidationError:
        return (len(_groups()), 0, 0, key)
    groups = _groups()
    return (list(groups).index(group), int(arg or 0), list(groups[group][1]).index(fig), key)


def fmt(key: str, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    try:
        m = metric(key)
    except ValidationError:
        return f"{value:g}"
    s = f"{value:,.{m.digits}f}"
    return f"{s} {m.unit}" if m.unit and m.unit not in ("1/s", "rules") else s


# ---- statistics over repetitions -----------------------------------------------------------
@dataclass(frozen=True)
class FigureStat:
    """The median of a figure's repetitions, with the min and max kept (the run's own spread)."""

    median: float
    lo: float
    hi: float
    n: int = 1

    @property
    def spread(self) -> float:
        return self.hi - self.lo

    def to_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.lo, "max": self.hi, "n": self.n}

    @staticmethod
    def from_dict(d: Mapping[str, float] | float) -> FigureStat:
        if isinstance(d, int | float):
            return FigureStat(float(d), float(d), float(d), 1)
        m = float(d["median"])
        return FigureStat(m, float(d.get("min", m)), float(d.get("max", m)), int(d.get("n", 1)))


def aggregate(values: Sequence[float]) -> FigureStat:
    """Median with min/max of the repetitions. NaN values (a repetition that did not measure) are
    left out; no value at all is an error, never a zero."""
    xs = [float(v) for v in values if not math.isnan(float(v))]
    if not xs:
        raise ValueError("no values to aggregate")
    return FigureStat(stats.median(xs), min(xs), max(xs), len(xs))


# ---- deltas -------------------------------------------------------------------------------
NOISE_FLOOR_PCT = 1.0  # a relative change this small is noise even when the runs carry no spread

BETTER, WORSE, NOISE, NA = "better", "worse", "within noise", "n/a"


@dataclass(frozen=True)
class Delta:
    abs: float | None
    pct: float | None
    verdict: str  # better | worse | within noise | n/a


def delta(key: str, base: FigureStat | None, other: FigureStat | None,
          higher_better: bool | None = None) -> Delta:
    """``other`` against ``base``. A change inside the runs' own spread — the two min..max ranges
    overlap — or below ``NOISE_FLOOR_PCT`` is "within noise", never an improvement. The direction
    comes from the metric catalog unless ``higher_better`` says it (figures outside the catalog)."""
    if base is None or other is None:
        return Delta(None, None, NA)
    diff = other.median - base.median
    pct = diff / abs(base.median) * 100.0 if base.median else None
    overlap = other.lo <= base.hi and base.lo <= other.hi
    has_spread = base.spread > 0 or other.spread > 0
    tiny = abs(diff) <= NOISE_FLOOR_PCT / 100.0 * abs(base.median) if base.median else diff == 0
    if (overlap and has_spread) or tiny:
        return Delta(diff, pct, NOISE)
    if higher_better is not None:
        higher = higher_better
    else:
        try:
            higher = metric(key).better == HIGHER
        except ValidationError:
            higher = False
    good = diff > 0 if higher else diff < 0
    return Delta(diff, pct, BETTER if good else WORSE)


def fmt_pct(pct: float | None) -> str:
    if pct is None:
        return "-"
    return f"{pct:+.0f}%" if abs(pct) >= 10 else f"{pct:+.1f}%"


# ---- --fail-if ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    """``rtt.p50 > +10%`` (relative change against the baseline), ``rtt.p50 > +500`` (absolute
    change, in the metric's unit), ``udp.loss_pct > 1`` (the value itself)."""

    text: str
    key: str
    op: str            # > | >= | < | <=
    value: float
    mode: str          # pct | delta | value

    def check(self, base: FigureStat | None, other: FigureStat | None) -> tuple[bool, str]:
        """(crossed, explanation). A figure missing on either side is never a crossing."""
        if other is None or (self.mode != "value" and base is None):
            return False, f"{self.key}: not measured, threshold not evaluated"
        if self.mode == "value":
            x = other.median
            shown = fmt(self.key, x)
        elif self.mode == "delta":
            assert base is not None
            x = other.median - base.median
            shown = f"{x:+g} ({fmt(self.key, base.median)} → {fmt(self.key, other.median)})"
        else:
            assert base is not None
            if not base.median:
                return False, f"{self.key}: baseline is 0, a relative change is undefined"
            x = (other.median - base.median) / abs(base.median) * 100.0
            shown = f"{x:+.1f}% ({fmt(self.key, base.median)} → {fmt(self.key, other.median)})"
        crossed = {">": x > self.value, ">=": x >= self.value, "<": x < self.value, "<=": x <= self.value}[self.op]
        return crossed, f"{self.key} {shown} {'crosses' if crossed else 'within'} '{self.text}'"


_THRESH = re.compile(r"^\s*([a-z0-9_@.]+)\s*(>=|<=|>|<)\s*([+-]?)(\d+(?:\.\d+)?)\s*(%?)\s*$")


def parse_threshold(text: str) -> Threshold:
    m = _THRESH.match(text)
    if not m:
        raise ValidationError(f"cannot parse threshold {text!r}; expected e.g. 'rtt.p50 > +10%', "
                              "'rtt.p99 > +500' or 'udp.loss_pct > 1'")
    key, op, sign, num, pct = m.groups()
    parse_key(key)
    value = float(num) * (-1.0 if sign == "-" else 1.0)
    if pct:
        mode = "pct"
    elif sign:
        mode = "delta"
    else:
        mode = "value"
    return Threshold(text.strip(), key, op, value, mode)


def evaluate(thresholds: Iterable[Threshold], base: Mapping[str, FigureStat] | None,
             other: Mapping[str, FigureStat]) -> list[tuple[Threshold, bool, str]]:
    out = []
    for t in thresholds:
        crossed, why = t.check((base or {}).get(t.key), other.get(t.key))
        out.append((t, crossed, why))
    return out
