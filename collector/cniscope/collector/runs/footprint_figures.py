"""CNI footprint from the stored samples: CPU millicores and RSS of the CNI agent processes
(``cni_cpu_millicores`` / ``cni_rss_bytes``, one series per process name), per node and sample time
summed over processes, then the median over (node, time)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from cniscope.collector.store import read_samples
from cniscope.core.stats import median

NAMES = ("cni_cpu_millicores", "cni_rss_bytes")
TAIL_NS = 60 * 10**9  # how far past a window to look for the sample that covers its end


def footprint_samples(conn: sqlite3.Connection, nodes: list[str], t0: int, t1: int) -> dict[str, float]:
    """Per sample name: the median over (node, time) of the sum over processes."""
    sums: dict[tuple[str, str, int], float] = {}   # (name, node, t) → sum over processes
    for r in read_samples(conn, t0, t1, nodes=nodes, names=NAMES):
        key = (r.name, r.node, r.t_ns)
        sums[key] = sums.get(key, 0.0) + r.value
    return _medians(sums)


def _medians(sums: dict[tuple[str, str, int], float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in NAMES:
        vals = [v for (n, _, _), v in sums.items() if n == name]
        if vals:
            out[name] = median(vals)
    return out


def window_footprint(conn: sqlite3.Connection, nodes: list[str],
                     windows: Sequence[tuple[int, int]]) -> tuple[dict[str, float], int]:
    """The footprint over some time windows, and how many (node, time) points it rests on.

    A CPU figure is a rate over the interval before its stamp, so a window is covered by the samples
    stamped inside it plus, per node and series, the first one after its end: a window shorter than
    the sample interval (a lab step loading 4 Services) still gets the sample that spans it."""
    sums: dict[tuple[str, str, int], float] = {}
    for t0, t1 in windows:
        inside: dict[tuple[str, str, int], float] = {}
        after: dict[tuple[str, str], int] = {}
        for r in read_samples(conn, t0, t1 + TAIL_NS, nodes=nodes, names=NAMES):
            if r.t_ns > t1:
                after[(r.name, r.node)] = min(after.get((r.name, r.node), r.t_ns), r.t_ns)
            key = (r.name, r.node, r.t_ns)
            inside[key] = inside.get(key, 0.0) + r.value
        for (name, node, t), v in inside.items():
            if t <= t1 or after.get((name, node)) == t:
                sums[(name, node, t)] = v
    points = len({(node, t) for (_, node, t) in sums})
    return _medians(sums), points
