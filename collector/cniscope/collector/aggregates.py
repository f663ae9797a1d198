"""Per-minute aggregates (count, min, mean, max per series), stored compressed like raw samples.

Retention turns raw samples older than the raw window into these; one prune of one node writes one
aggregate chunk (table ``aggregate_chunks``), encoded with the raw-sample codec (:mod:`.chunks`): each
minute is a "batch" holding four samples per series (n, min, mean, max, in that order; the series'
labels, as JSON, are its one label), so a series-minute costs a few bytes instead of a ~100-byte row. A minute split between two prunes lives in two chunks; readers
(:func:`read_aggregates`) merge them. Databases from before keep their ``samples_1m`` rows, which are
read and pruned alongside until they age out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from cniscope.collector import chunks
from cniscope.core.errors import StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS aggregate_chunks (
    node TEXT NOT NULL, t0_ns INTEGER NOT NULL, t1_ns INTEGER NOT NULL, n_rows INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS aggregate_chunks_node_t ON aggregate_chunks (node, t0_ns);
CREATE INDEX IF NOT EXISTS aggregate_chunks_t ON aggregate_chunks (t1_ns)
"""

MINUTE_NS = 60_000_000_000

Key = tuple[str, str, int]   # (name, labels as JSON, minute)


class AggregateRow(NamedTuple):
    node: str
    name: str
    labels: str          # JSON, keys sorted
    minute: int          # minutes since the epoch
    n: int
    vmin: float
    vmean: float
    vmax: float


def ensure_schema(conn: sqlite3.Connection) -> None:
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def put(conn: sqlite3.Connection, node: str, rows: Mapping[Key, Sequence[float]]) -> int:
    """Store ``rows`` ((name, labels, minute) → [n, min, sum, max]) as one chunk; the bytes written."""
    if not rows:
        return 0
    by_minute: dict[int, list[tuple[str, Mapping[str, str], float, int]]] = {}
    for (name, labels, minute), (n, lo, total, hi) in rows.items():
        t = minute * MINUTE_NS
        lab = {"": labels}   # the labels' JSON travels as the series' one label
        by_minute.setdefault(minute, []).extend(((name, lab, n, t), (name, lab, lo, t), (name, lab, total / n, t),
                                                 (name, lab, hi, t)))
    b = chunks.ChunkBuilder()
    for minute in sorted(by_minute):
        b.add(minute, minute * MINUTE_NS, minute * MINUTE_NS, 0, 0, by_minute[minute])
    body = chunks.encode(b.chunk)
    first, last = min(by_minute), max(by_minute)
    conn.execute("INSERT INTO aggregate_chunks (node, t0_ns, t1_ns, n_rows, body) VALUES (?,?,?,?,?)",
                 (node, first * MINUTE_NS, last * MINUTE_NS, len(rows), body))
    return len(body)


def _rows(body: bytes) -> Iterator[tuple[Key, list[float]]]:
    """((name, labels, minute), [n, min, mean, max]) of every series-minute in a chunk."""
    c = chunks.decode(body)
    keys = [(name, dict(labels).get("", "{}")) for name, labels in c.series]
    for b in c.batches:
        stats: dict[int, list[float]] = {}
        for i, _, v in b.samples:
            stats.setdefault(i, []).append(v)
        for i, vs in stats.items():
            if len(vs) != 4:
                raise StoreError(f"aggregate chunk: {len(vs)} values for a series-minute, not 4")
            yield (keys[i][0], keys[i][1], b.seq), vs


def read_aggregates(conn: sqlite3.Connection, t0_ns: int, t1_ns: int, nodes: Sequence[str] | None = None,
                    names: Sequence[str] | None = None) -> list[AggregateRow]:
    """Minutes that start within [t0_ns, t1_ns], merged across chunks, by node, name, labels, minute."""
    m0, m1 = t0_ns // MINUTE_NS, t1_ns // MINUTE_NS
    want = set(names) if names is not None else None
    args: list[Any] = [m0 * MINUTE_NS, m1 * MINUTE_NS]
    where = ""
    if nodes is not None:
        where = f" AND node IN ({','.join('?' * len(nodes))})"
        args.extend(nodes)
    acc: dict[tuple[str, str, str, int], list[float]] = {}   # → [n, min, sum, max]

    def merge(node: str, name: str, lab: str, minute: int, n: float, lo: float, mean: float, hi: float) -> None:
        key = (node, name, lab, minute)
        a = acc.get(key)
        if a is None:
            acc[key] = [n, lo, mean * n, hi]
        else:
            a[0] += n
            a[1] = min(a[1], lo)
            a[2] += mean * n
            a[3] = max(a[3], hi)

    for node, body in conn.execute("SELECT node, body FROM aggregate_chunks WHERE t1_ns >= ? AND t0_ns <= ?"
                                   + where, args):
        for (name, lab, minute), (n, lo, mean, hi) in _rows(body):
            if m0 <= minute <= m1 and (want is None or name in want):
                merge(node, name, lab, minute, n, lo, mean, hi)
    legacy = [m0, m1, *args[2:]]
    for row in conn.execute("SELECT node, name, labels, minute, n, vmin, vmean, vmax FROM samples_1m "
                            "WHERE minute BETWEEN ? AND ?" + where, legacy):
        if want is None or row[1] in want:
            merge(*row)
    return [AggregateRow(node, name, lab, minute, int(n), lo, total / n, hi)
            for (node, name, lab, minute), (n, lo, total, hi) in sorted(acc.items())]


def prune_older(conn: sqlite3.Connection, cutoff_ns: int) -> int:
    """Delete aggregates of minutes before ``cutoff_ns`` (whole chunks: a chunk goes once its last
    minute is before it). Rows (or chunk rows) deleted."""
    n = 0
    for rowid, rows in conn.execute("SELECT rowid, n_rows FROM aggregate_chunks WHERE t1_ns < ?",
                                    ((cutoff_ns // MINUTE_NS) * MINUTE_NS,)).fetchall():
        conn.execute("DELETE FROM aggregate_chunks WHERE rowid = ?", (rowid,))
        n += rows
    n += conn.execute("DELETE FROM samples_1m WHERE minute < ?", (cutoff_ns // MINUTE_NS,)).rowcount
    return n
