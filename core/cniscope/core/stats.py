"""Small statistics helpers shared by probes, reports and the TUI."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), like numpy's default. Empty → NaN."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(xs[lo])
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def mdev(values: Sequence[float]) -> float:
    """ping's mdev: sqrt(mean(x²) − mean(x)²)."""
    if not values:
        return math.nan
    m = mean(values)
    m2 = sum(v * v for v in values) / len(values)
    return math.sqrt(max(m2 - m * m, 0.0))
