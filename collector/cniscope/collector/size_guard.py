"""Keeping the database under its size bound: what is measured, and what goes first.

The file only grows when no free page is left, so it stays as large as the most pages ever in use:
the bound holds when the pages in use stay under the budget (the bound less the WAL's share and the
shared memory). Near it (``HIGH`` of the budget) the oldest data goes, oldest first and in small
transactions, until the pages in use are back under ``LOW``: the head is compacted at once (it costs
~100x its compressed form), then the oldest raw chunks become per-minute aggregates and are deleted
(all but the last ``RAW_FLOOR_SECONDS``), then the oldest aggregates go, then the oldest log events,
and last the most recent raw samples become aggregates too. Runs, probe results, capability reports
and node records are never deleted here: when they alone approach the bound, :mod:`.storage_upkeep`
warns and ``cniscope_collector_db_protected_bytes`` shows it.

Every function here runs on the store's writer thread.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

from cniscope.collector import chunks, retention

HIGH = 0.90            # start freeing above this fraction of the budget (the rest: ingest between checks)
LOW = 0.80             # free down to this
WAL_SHARE = 16         # the WAL is cut back past 1/WAL_SHARE of the bound (at most WAL_MAX) ...
WAL_MAX = 64 * 1024 * 1024
WAL_RESERVE = 3        # ... and may overshoot that while a transaction runs: the budget leaves 3x that
STEP_EVENTS = 2000     # log events per freeing transaction
SAMPLE_ROWS = 256      # newest rows whose average size stands for a table's rows
RAW_FLOOR_SECONDS = 3600.0   # raw samples this recent are aggregated only after older aggregates went


@dataclass
class Sizes:
    disk: int          # file + WAL + shared memory, as the volume counts them
    file: int
    live: int          # pages in use (free pages are reused before the file grows)
    wal: int
    budget: int        # what the live pages may take: the bound less the WAL's share



def wal_limit(max_bytes: int) -> int:
    return max(1024 * 1024, min(WAL_MAX, max_bytes // WAL_SHARE))


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def measure(conn: sqlite3.Connection, path: str, max_bytes: int) -> Sizes:
    pc, = conn.execute("PRAGMA page_count").fetchone()
    fl, = conn.execute("PRAGMA freelist_count").fetchone()
    ps, = conn.execute("PRAGMA page_size").fetchone()
    if path == ":memory:":
        return Sizes(pc * ps, pc * ps, (pc - fl) * ps, 0, max_bytes)
    file, wal, shm = _file_size(path), _file_size(path + "-wal"), _file_size(path + "-shm")
    return Sizes(file + wal + shm, file, (pc - fl) * ps, wal, max_bytes - WAL_RESERVE * wal_limit(max_bytes) - shm)


def step_bytes(max_bytes: int) -> int:
    """What one freeing transaction reads at most (it writes about as much to the WAL)."""
    return wal_limit(max_bytes) // 4


def _oldest(conn: sqlite3.Connection, table: str, where: str, args: tuple[object, ...],
            max_bytes: int) -> list[tuple[int, ...]]:
    """rowids (and columns) of the oldest rows of a chunk table whose bodies add up to ``max_bytes``
    (at least one)."""
    out, total = [], 0
    for row in conn.execute(f"SELECT rowid, LENGTH(body) FROM {table} WHERE {where} ORDER BY t1_ns", args):
        out.append(row[0])
        total += row[1]
        if total >= max_bytes:
            break
    return out


def _recent_average(conn: sqlite3.Connection, table: str, expr: str) -> float:
    """The average of ``expr`` over the table's newest ``SAMPLE_ROWS`` rows."""
    avg = conn.execute(f"SELECT AVG(v) FROM (SELECT {expr} AS v FROM {table} ORDER BY rowid DESC LIMIT ?)",
                       (SAMPLE_ROWS,)).fetchone()[0]
    return float(avg or 0.0)


def prunable_bytes(conn: sqlite3.Connection) -> tuple[int, int]:
    """(raw sample bytes, everything size pruning may delete). Chunk bodies are summed (their length
    is in each row's header); the head and the log, whose rows are small and many, are estimated from
    their row count and their newest rows, so that this never reads them whole."""
    head_rows = conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    raw = int(head_rows * (60 + _recent_average(conn, "batches", "COALESCE(LENGTH(samples), 0)")))
    raw += sum(conn.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) + 80 * COUNT(*) FROM chunks").fetchone())
    agg = conn.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) + 60 * COUNT(*) FROM aggregate_chunks").fetchone()[0]
    agg += conn.execute("SELECT 100 * COUNT(*) FROM samples_1m").fetchone()[0]
    first, last = conn.execute("SELECT MIN(rowid), MAX(rowid) FROM events").fetchone()
    events = 0 if first is None else last - first + 1   # deleted oldest first: no holes to speak of
    ev = int(events * (40 + _recent_average(conn, "events", "LENGTH(message)")))
    return raw, raw + agg + ev


def _tx(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")


def prune_oldest_raw(conn: sqlite3.Connection, before_ns: int | None, max_bytes: int) -> int:
    """Turn the oldest raw chunks (any node; only those ending before ``before_ns``), about
    ``max_bytes`` of them, into per-minute aggregates and delete them; how many samples."""
    ids = _oldest(conn, "chunks", "t1_ns < ?", (2**63 - 1 if before_ns is None else before_ns,), max_bytes)
    if not ids:
        return 0
    per_node: dict[str, retention.Aggregates] = {}
    _tx(conn)
    try:
        for rowid in ids:
            node, body = conn.execute("SELECT node, body FROM chunks WHERE rowid = ?", (rowid,)).fetchone()
            c = chunks.decode(body)
            per_node.setdefault(node, retention.Aggregates()).add_chunk_batches(c, c.batches)
            conn.execute("DELETE FROM chunks WHERE rowid = ?", (rowid,))
        for node, agg in per_node.items():
            agg.flush(conn, node)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return sum(a.samples for a in per_node.values())


def prune_oldest_aggregates(conn: sqlite3.Connection, max_bytes: int) -> int:
    """Delete the oldest per-minute aggregates (the uncompressed ones of old databases first); rows."""
    _tx(conn)
    try:
        first = conn.execute("SELECT MIN(minute) FROM samples_1m").fetchone()[0]
        if first is not None:  # an hour of them at a time
            n = conn.execute("DELETE FROM samples_1m WHERE minute < ?", (first + 60,)).rowcount
        else:
            n = 0
            for rowid in _oldest(conn, "aggregate_chunks", "1", (), max_bytes):
                n += conn.execute("SELECT n_rows FROM aggregate_chunks WHERE rowid = ?", (rowid,)).fetchone()[0]
                conn.execute("DELETE FROM aggregate_chunks WHERE rowid = ?", (rowid,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(n)


def prune_oldest_events(conn: sqlite3.Connection, limit: int = STEP_EVENTS) -> int:
    _tx(conn)
    try:
        n = conn.execute("DELETE FROM events WHERE rowid IN (SELECT rowid FROM events ORDER BY rowid LIMIT ?)",
                         (limit,)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(n)


def shrink(conn: sqlite3.Connection, pages: int) -> None:
    """Give up to ``pages`` free pages back to the file system (databases created with incremental
    auto-vacuum; elsewhere free pages are only reused)."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        conn.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
