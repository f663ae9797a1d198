"""Compaction: the raw batches just received (the head, one protobuf blob per batch, cheap to write)
become compressed chunks (:mod:`.chunks`) once they are a few minutes old.

A (node, boot)'s head is compacted whole once its oldest batch was received ``CHUNK_SECONDS`` ago,
in seq order, at most ``MAX_CHUNK_SAMPLES`` samples per chunk and per transaction, so ingest commits
interleave. The per-boot watermark (``batch_watermarks``, shared with retention) moves up to the last
seq compacted: a batch resent after its row became part of a chunk is still a duplicate.

Every function here runs on the store's writer thread.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass

from cniscope.api.v1 import agent_pb2
from cniscope.collector import chunks

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    node TEXT NOT NULL, boot_id TEXT NOT NULL, seq_lo INTEGER NOT NULL, seq_hi INTEGER NOT NULL,
    t0_ns INTEGER NOT NULL, t1_ns INTEGER NOT NULL, n_batches INTEGER NOT NULL, n_samples INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_node_t ON chunks (node, t0_ns);
CREATE INDEX IF NOT EXISTS chunks_t ON chunks (t1_ns);
"""

CHUNK_SECONDS = 300.0        # a head is compacted once its oldest batch was received this long ago
MAX_CHUNK_SAMPLES = 8192     # samples per chunk (and per compaction transaction) at most
COMPACT_EVERY = 10.0         # seconds between compaction passes


@dataclass
class CompactReport:
    batches: int = 0
    samples: int = 0
    chunks: int = 0
    bytes_in: int = 0        # head blobs compacted
    bytes_out: int = 0       # chunk bodies written

    def add(self, other: CompactReport) -> None:
        self.batches += other.batches
        self.samples += other.samples
        self.chunks += other.chunks
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the chunk table (statement by statement: also inside a migration's transaction)."""
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def due_heads(conn: sqlite3.Connection, received_before_ns: int) -> list[tuple[str, str, int]]:
    """(node, boot, its highest seq now) of heads whose oldest batch was received before
    ``received_before_ns``."""
    return [(n, b, s) for n, b, s in conn.execute(
        "SELECT node, boot_id, MAX(seq) FROM batches GROUP BY node, boot_id HAVING MIN(received_ns) <= ? "
        "ORDER BY node", (received_before_ns,))]


def add_blob(builder: chunks.ChunkBuilder, seq: int, agent_ns: int, received_ns: int, spool_dropped: int,
             blob: bytes | None) -> None:
    """One head row into a chunk being built (a batch without samples keeps its seq and times)."""
    if not blob:
        builder.add(seq, agent_ns, received_ns, spool_dropped, 0, ())
        return
    b = agent_pb2.Batch.FromString(blob)
    builder.add(seq, agent_ns, received_ns, spool_dropped, b.spool_depth,
                ((s.name, s.labels, s.value, s.time_unix_nano) for s in b.samples))


def put_chunk(conn: sqlite3.Connection, node: str, boot_id: str, builder: chunks.ChunkBuilder) -> int:
    """Insert the built chunk; the bytes of its body."""
    bs = builder.chunk.batches
    body = chunks.encode(builder.chunk)
    conn.execute("INSERT INTO chunks (node, boot_id, seq_lo, seq_hi, t0_ns, t1_ns, n_batches, n_samples, body) "
                 "VALUES (?,?,?,?,?,?,?,?,?)",
                 (node, boot_id, bs[0].seq, bs[-1].seq, min(b.agent_ns for b in bs), max(b.agent_ns for b in bs),
                  len(bs), builder.samples, body))
    return len(body)


def raise_watermark(conn: sqlite3.Connection, node: str, boot_id: str, seq: int,
                    watermarks: dict[tuple[str, str], int]) -> int:
    """Write the new watermark (inside the caller's transaction); the caller puts the value returned
    into ``watermarks`` once it committed."""
    upto = max(seq, watermarks.get((node, boot_id), 0))
    conn.execute("INSERT INTO batch_watermarks VALUES (?,?,?) ON CONFLICT (node, boot_id) "
                 "DO UPDATE SET pruned_upto = MAX(pruned_upto, excluded.pruned_upto)", (node, boot_id, upto))
    return upto


def compact_step(conn: sqlite3.Connection, node: str, boot_id: str, upto_seq: int,
                 watermarks: dict[tuple[str, str], int], max_samples: int = MAX_CHUNK_SAMPLES,
                 max_bytes: float = math.inf) -> CompactReport:
    """Turn the oldest head batches of (node, boot), up to ``upto_seq`` and at most ``max_samples``
    samples or ``max_bytes`` of head, into one chunk, in one transaction; an empty report when there
    is nothing more (a pass ends where the head ended when it began, however fast batches arrive)."""
    rep = CompactReport()
    builder = chunks.ChunkBuilder()
    last = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for seq, agent_ns, received_ns, dropped, blob in conn.execute(
                "SELECT seq, agent_ns, received_ns, spool_dropped, samples FROM batches "
                "WHERE node = ? AND boot_id = ? AND seq <= ? ORDER BY seq", (node, boot_id, upto_seq)):
            add_blob(builder, seq, agent_ns, received_ns, dropped, blob)
            rep.bytes_in += len(blob) if blob else 0
            last = seq
            if builder.samples >= max_samples or rep.bytes_in >= max_bytes:
                break
        if last:
            rep.bytes_out = put_chunk(conn, node, boot_id, builder)
            rep.batches = conn.execute("DELETE FROM batches WHERE node = ? AND boot_id = ? AND seq <= ?",
                                       (node, boot_id, last)).rowcount
            rep.samples, rep.chunks = builder.samples, 1
            mark = raise_watermark(conn, node, boot_id, last, watermarks)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if last:
        watermarks[(node, boot_id)] = mark
    return rep


def compact_due(conn: sqlite3.Connection, received_before_ns: int,
                watermarks: dict[tuple[str, str], int]) -> CompactReport:
    """Compact every head that is due, here and now (tools and tests; the collector interleaves steps
    with ingest instead)."""
    total = CompactReport()
    for node, boot, upto in due_heads(conn, received_before_ns):
        while (rep := compact_step(conn, node, boot, upto, watermarks)).batches:
            total.add(rep)
    return total
