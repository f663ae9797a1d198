"""Retention: raw samples (head blobs and compressed chunks) for ``retention_hours``, per-minute
aggregates (count, min, mean, max per series, compressed: :mod:`.aggregates`) beyond that for
``aggregate_days``; probe results, runs and capability reports are kept until deleted. Batch rows (the
duplicate guard) older than the raw window are replaced by a per-boot watermark, so a batch resent
after its rows were pruned is still recognised as a duplicate. (``samples_1m`` holds the uncompressed
aggregates of databases from before; they are read and aged out alongside.)

Every function here runs on the store's writer thread (``Store.call``), one node per transaction,
so ingest commits interleave with a prune.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from cniscope.collector import aggregates, chunks, compaction
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
    chunks_deleted: int = 0


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    aggregates.ensure_schema(conn)


def load_watermarks(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    ensure_schema(conn)
    return {(n, b): int(s) for n, b, s in conn.execute("SELECT node, boot_id, pruned_upto FROM batch_watermarks")}


def nodes_with_samples(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT node FROM nodes ORDER BY node")]


class Aggregates:
    """Per-minute (count, min, sum, max) of one node's samples, merged into ``samples_1m`` on flush."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, int], list[float]] = {}   # (name, labels, minute) → [n, min, sum, max]
        self.samples = 0
        self._labels: dict[tuple[tuple[str, str], ...], str] = {}

    def labels_json(self, items: tuple[tuple[str, str], ...]) -> str:
        """``items`` sorted by key."""
        if not items:
            return "{}"
        out = self._labels.get(items)
        if out is None:
            out = self._labels[items] = json.dumps(dict(items))
        return out

    def add(self, name: str, labels: str, t_ns: int, v: float) -> None:
        key = (name, labels, t_ns // MINUTE_NS)
        a = self.rows.get(key)
        if a is None:
            self.rows[key] = [1, v, v, v]
        else:
            a[0] += 1
            a[1] = min(a[1], v)
            a[2] += v
            a[3] = max(a[3], v)
        self.samples += 1

    def add_blob(self, blob: bytes | None) -> None:
        for smp in decode_samples(blob):
            lab = self.labels_json(tuple(sorted(smp.labels.items()))) if smp.labels else "{}"
            self.add(smp.name, lab, smp.time_unix_nano, smp.value)

    def add_chunk_batches(self, chunk: chunks.Chunk, batches: list[chunks.ChunkBatch]) -> None:
        series = [(name, self.labels_json(items)) for name, items in chunk.series]
        for b in batches:
            for i, t, v in b.samples:
                name, lab = series[i]
                self.add(name, lab, t, v)

    def flush(self, conn: sqlite3.Connection, node: str) -> int:
        """Write the aggregates as one compressed chunk; how many series-minutes it holds."""
        aggregates.put(conn, node, self.rows)
        return len(self.rows)


def _tx_end(conn: sqlite3.Connection, ok: bool) -> None:
    conn.execute("COMMIT" if ok else "ROLLBACK")


def prune_node(conn: sqlite3.Connection, node: str, cutoff_ns: int,
               watermarks: dict[tuple[str, str], int]) -> PruneReport:
    """Aggregate and delete one node's raw batches sent before ``cutoff_ns`` (whole minutes only), from
    the head and from chunks (a chunk that straddles the cutoff keeps its later batches)."""
    rep = PruneReport()
    cutoff = (cutoff_ns // MINUTE_NS) * MINUTE_NS  # never split a minute between raw and aggregate
    agg = Aggregates()
    marks: dict[str, int] = {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        for boot_id, seq, blob in conn.execute(
                "SELECT boot_id, seq, samples FROM batches WHERE node = ? AND agent_ns < ?", (node, cutoff)):
            marks[boot_id] = max(seq, marks.get(boot_id, 0))
            agg.add_blob(blob)
        for rowid, boot_id, body in conn.execute(
                "SELECT rowid, boot_id, body FROM chunks WHERE node = ? AND t0_ns < ?", (node, cutoff)).fetchall():
            c = chunks.decode(body)
            old = [b for b in c.batches if b.agent_ns < cutoff]
            agg.add_chunk_batches(c, old)
            conn.execute("DELETE FROM chunks WHERE rowid = ?", (rowid,))
            if len(old) < len(c.batches):
                keep = chunks.ChunkBuilder()
                for b in c.batches:
                    if b.agent_ns >= cutoff:
                        keep.add(b.seq, b.agent_ns, b.received_ns, b.spool_dropped, b.spool_depth,
                                 ((c.series[i][0], dict(c.series[i][1]), v, t) for i, t, v in b.samples))
                compaction.put_chunk(conn, node, boot_id, keep)
            rep.chunks_deleted += 1
        rep.samples_aggregated = agg.flush(conn, node)
        rep.samples_deleted = agg.samples
        rep.batches_deleted = conn.execute("DELETE FROM batches WHERE node = ? AND agent_ns < ?",
                                           (node, cutoff)).rowcount
        new_marks = {boot_id: compaction.raise_watermark(conn, node, boot_id, upto, watermarks)
                     for boot_id, upto in marks.items()}
    except BaseException:
        _tx_end(conn, False)
        raise
    _tx_end(conn, True)
    for boot_id, upto in new_marks.items():
        watermarks[(node, boot_id)] = upto
    return rep


def prune_aggregates(conn: sqlite3.Connection, cutoff_ns: int) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        n = aggregates.prune_older(conn, cutoff_ns)
    except BaseException:
        _tx_end(conn, False)
        raise
    _tx_end(conn, True)
    return n
