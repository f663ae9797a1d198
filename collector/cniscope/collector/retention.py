"""Retention: raw samples for ``retention_hours``, per-minute aggregates (count, min, mean, max per
series) beyond that for ``aggregate_days``; probe results, runs and capability reports are kept until
deleted. Batch rows (the duplicate guard) older than the raw window are replaced by a per-boot
watermark, so a batch resent after its rows were pruned is still recognised as a duplicate.

Every function here runs on the store's writer thread (``Store.call``), one node per transaction,
so ingest commits interleave with a prune.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

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


def prune_node(conn: sqlite3.Connection, node: str, cutoff_ns: int,
               watermarks: dict[tuple[str, str], int]) -> PruneReport:
    """Aggregate and delete one node's raw samples older than ``cutoff_ns`` (whole minutes only)."""
    rep = PruneReport()
    cutoff = (cutoff_ns // MINUTE_NS) * MINUTE_NS  # never split a minute between raw and aggregate
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            "INSERT INTO samples_1m (node, name, labels, minute, n, vmin, vmean, vmax) "
            "SELECT node, name, labels, t_ns / ?, COUNT(*), MIN(value), AVG(value), MAX(value) "
            "FROM samples WHERE node = ? AND t_ns < ? GROUP BY name, labels, t_ns / ? "
            "ON CONFLICT (node, name, labels, minute) DO UPDATE SET "
            "vmean = (vmean * n + excluded.vmean * excluded.n) / (n + excluded.n), "
            "n = n + excluded.n, vmin = MIN(vmin, excluded.vmin), vmax = MAX(vmax, excluded.vmax)",
            (MINUTE_NS, node, cutoff, MINUTE_NS))
        rep.samples_aggregated = cur.rowcount
        marks = conn.execute("SELECT boot_id, MAX(seq) FROM samples WHERE node = ? AND t_ns < ? GROUP BY boot_id",
                             (node, cutoff)).fetchall()
        rep.samples_deleted = conn.execute("DELETE FROM samples WHERE node = ? AND t_ns < ?", (node, cutoff)).rowcount
        for boot_id, upto in marks:
            key = (node, boot_id)
            upto = max(int(upto), watermarks.get(key, 0))
            conn.execute("INSERT INTO batch_watermarks VALUES (?,?,?) ON CONFLICT (node, boot_id) "
                         "DO UPDATE SET pruned_upto = MAX(pruned_upto, excluded.pruned_upto)", (node, boot_id, upto))
            rep.batches_deleted += conn.execute("DELETE FROM batches WHERE node = ? AND boot_id = ? AND seq <= ?",
                                                (node, boot_id, upto)).rowcount
            watermarks[key] = upto
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
