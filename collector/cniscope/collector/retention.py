"""Retention: raw samples (one blob per batch) for ``retention_hours``, per-minute aggregates (count, min, mean, max per
series) beyond that for ``aggregate_days``; probe results, runs and capability reports are kept until
deleted. Batch rows (the duplicate guard) older than the raw window are replaced by a per-boot
watermark, so a batch resent after its rows were pruned is still recognised as a duplicate.

Every function here runs on the store's writer thread (``Store.call``), one node per transaction,
so ingest commits interleave with a prune.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from cniscope.collector.blobs import decode_samples

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples_1m (
    node TEXT NOT NULL, name TEXT NOT NULL, labels TEXT NOT NULL, minute INTEGER NOT NULL,
    n INTEGER NOT NULL, vmin REAL NOT NULL, vmean REAL NOT NULL, vmax REAL NOT NULL,
    PRIMARY KEY (node, name, labels, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batch_watermarks (
    node TEXT NOT NULL, boot_id TEXT NOT NULL, pruned_upto INTEGER NOT NULL,
    PRIMARY KEY (node, boot_id)
) WITHOUT ROWID;
"""

MINUTE_NS = 60_000_000_000
AGGREGATE_DAYS = 30.0       # per-minute aggregates are kept this long
PRUNE_EVERY = 300.0         # seconds between retention passes


@dataclass
class PruneReport:
    samples_aggregated: int = 0
    samples_deleted: int = 0
    batches_deleted: int = 0
    aggregates_deleted: int = 0


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def load_watermarks(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    ensure_schema(conn)
    return {(n, b): int(s) for n, b, s in conn.execute("SELECT node, boot_id, pruned_upto FROM batch_watermarks")}


def nodes_with_samples(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT node FROM nodes ORDER BY node")]


def _labels_json(labels: Mapping[str, str], cache: dict[tuple[tuple[str, str], ...], str]) -> str:
    if not labels:
        return "{}"
    key = tuple(sorted(labels.items()))
    out = cache.get(key)
    if out is None:
        out = cache[key] = json.dumps(dict(key))
    return out


def prune_node(conn: sqlite3.Connection, node: str, cutoff_ns: int,
               watermarks: dict[tuple[str, str], int]) -> PruneReport:
    """Aggregate and delete one node's raw batches sent before ``cutoff_ns`` (whole minutes only)."""
    rep = PruneReport()
    cutoff = (cutoff_ns // MINUTE_NS) * MINUTE_NS  # never split a minute between raw and aggregate
    agg: dict[tuple[str, str, int], list[float]] = {}   # (name, labels, minute) → [n, min, sum, max]
    marks: dict[str, int] = {}
    labels: dict[tuple[tuple[str, str], ...], str] = {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        for boot_id, seq, blob in conn.execute(
                "SELECT boot_id, seq, samples FROM batches WHERE node = ? AND agent_ns < ?", (node, cutoff)):
            marks[boot_id] = max(seq, marks.get(boot_id, 0))
            for smp in decode_samples(blob):
                v = smp.value
                key = (smp.name, _labels_json(smp.labels, labels), smp.time_unix_nano // MINUTE_NS)
                a = agg.get(key)
                if a is None:
                    agg[key] = [1, v, v, v]
                else:
                    a[0] += 1
                    a[1] = min(a[1], v)
                    a[2] += v
                    a[3] = max(a[3], v)
                rep.samples_deleted += 1
        conn.executemany(
            "INSERT INTO samples_1m (node, name, labels, minute, n, vmin, vmean, vmax) VALUES (?,?,?,?,?,?,?,?) "
            "ON CONFLICT (node, name, labels, minute) DO UPDATE SET "
            "vmean = (vmean * n + excluded.vmean * excluded.n) / (n + excluded.n), "
            "n = n + excluded.n, vmin = MIN(vmin, excluded.vmin), vmax = MAX(vmax, excluded.vmax)",
            [(node, name, lab, minute, int(n), lo, total / n, hi)
             for (name, lab, minute), (n, lo, total, hi) in agg.items()])
        rep.samples_aggregated = len(agg)
        rep.batches_deleted = conn.execute("DELETE FROM batches WHERE node = ? AND agent_ns < ?",
                                           (node, cutoff)).rowcount
        for boot_id, upto in marks.items():
            upto = max(upto, watermarks.get((node, boot_id), 0))
            conn.execute("INSERT INTO batch_watermarks VALUES (?,?,?) ON CONFLICT (node, boot_id) "
                         "DO UPDATE SET pruned_upto = MAX(pruned_upto, excluded.pruned_upto)", (node, boot_id, upto))
            watermarks[(node, boot_id)] = upto
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return rep


def prune_aggregates(conn: sqlite3.Connection, cutoff_ns: int) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        n = conn.execute("DELETE FROM samples_1m WHERE minute < ?", (cutoff_ns // MINUTE_NS,)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return n
