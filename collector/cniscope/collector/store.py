"""SQLite store (WAL). One writer thread; a batch is acknowledged only after its commit returns.

Duplicates are dropped by the unique key (node, boot_id, seq): a batch resent after a reconnect
inserts nothing the second time; once its row is compacted or pruned, by the per-boot watermark.

Raw samples arrive as one blob per batch (:mod:`cniscope.collector.blobs`) in the head (table
``batches``), one insert per batch; a few minutes later compaction (:mod:`.compaction`) turns them
into compressed chunks (:mod:`.chunks`, about 1-2 bytes a sample). Readers go through
:func:`read_samples` (:mod:`.raw_samples`), which reads both; retention turns old ones into
per-minute aggregates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.collector import capability_migration, compaction, retention
from cniscope.collector.blobs import encode_samples
from cniscope.collector.raw_samples import SAMPLE_SLACK_NS, SampleRow, read_samples, stored_batches
from cniscope.core.errors import StoreError

__all__ = ["SAMPLE_SLACK_NS", "SCHEMA_VERSION", "SampleRow", "Store", "read_samples", "stored_batches"]

T = TypeVar("T")

SCHEMA_VERSION = 4  # 2: one samples blob per batch; 3: typed capability findings; 4: compressed chunks
CHECKPOINT_EVERY = 1.0  # seconds between WAL checkpoints (on their own thread and connection)
ROW_BYTES = 120         # what a batch row costs besides its blob (row, key and time index), roughly

log = logging.getLogger("cniscope.collector.store")

BATCHES_DDL = """
CREATE TABLE IF NOT EXISTS batches (
    node TEXT NOT NULL, boot_id TEXT NOT NULL, seq INTEGER NOT NULL,
    agent_ns INTEGER NOT NULL, received_ns INTEGER NOT NULL, n_samples INTEGER NOT NULL,
    spool_dropped INTEGER NOT NULL DEFAULT 0,
    samples BLOB,
    UNIQUE (node, boot_id, seq)
)
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    node TEXT NOT NULL, boot_id TEXT NOT NULL, agent_version TEXT, host_ip TEXT, pod_ip TEXT,
    hello BLOB, first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL,
    PRIMARY KEY (node, boot_id)
);
""" + BATCHES_DDL + """;
CREATE INDEX IF NOT EXISTS batches_node_t ON batches (node, agent_ns);
CREATE TABLE IF NOT EXISTS probe_results (
    probe_id TEXT PRIMARY KEY, kind TEXT NOT NULL, source_node TEXT, target_node TEXT,
    target_address TEXT, path TEXT, ok INTEGER NOT NULL, error TEXT, figures TEXT NOT NULL,
    params TEXT NOT NULL, detail TEXT, started_ns INTEGER, finished_ns INTEGER, raw BLOB
);
CREATE INDEX IF NOT EXISTS probe_results_pair ON probe_results (source_node, target_node, finished_ns);
CREATE TABLE IF NOT EXISTS capabilities (
    node TEXT PRIMARY KEY, boot_id TEXT, report BLOB NOT NULL, t_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    t_ns INTEGER NOT NULL, level TEXT NOT NULL, node TEXT, message TEXT NOT NULL
);
"""


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._local = threading.local()
        self._conn: sqlite3.Connection | None = None
        self.watermarks: dict[tuple[str, str], int] = {}  # (node, boot_id) → seqs pruned by retention
        # the size bound (set by the storage upkeep): commits wait while the database is at its bound
        # or when they added ``room`` bytes since the last size check; a WAL past ``wal_cap`` is cut
        # back before the next commit
        self.over_bound = False
        self.room = math.inf
        self.committed_bytes = 0
        self.wal_cap = math.inf
        self.tx_bytes = math.inf   # what one group commit writes at most (the WAL grows by that between checks)
        self._ckpt: threading.Thread | None = None
        self._ckpt_stop = threading.Event()
        try:
            self._open()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None

    def _open(self) -> None:
        if self.path != ":memory:":
            parent = Path(self.path).resolve().parent
            if not parent.is_dir():
                raise sqlite3.OperationalError(f"directory {parent} does not exist")
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect in a new database only: it can shrink
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        _migrate(conn)
        conn.executescript(SCHEMA)
        compaction.ensure_schema(conn)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self.watermarks = retention.load_watermarks(conn)
        self._conn = conn
        if self.path != ":memory:":
            # commits never run a checkpoint (its fsync stalled the writer, and every ack behind it,
            # for tens of milliseconds); a thread of its own checkpoints without blocking writers
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._ckpt_stop = threading.Event()
            self._ckpt = threading.Thread(target=self._checkpointer, name="store-checkpoint", daemon=True)
            self._ckpt.start()

    def _checkpointer(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            while not self._ckpt_stop.wait(CHECKPOINT_EVERY):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # a busy or failing checkpoint is retried next time
                    log.warning("WAL checkpoint failed: %s", exc)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.warning("WAL checkpointer stopped: %s", exc)
        finally:
            conn.close()

    @property
    def conn(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    def set_wal_limit(self, limit: int) -> None:
        """The WAL file is cut back to ``limit`` bytes after each checkpoint."""
        self.conn.execute(f"PRAGMA journal_size_limit={int(limit)}").fetchone()

    def must_wait(self) -> bool:
        """Whether commits should wait for the storage upkeep (a cheap look: once per group)."""
        return self.over_bound or self.committed_bytes >= self.room

    def wal_over_cap(self) -> bool:
        """Whether the WAL grew past ``wal_cap`` (one stat, once per group)."""
        if self.wal_cap == math.inf:
            return False
        try:
            return os.stat(self.path + "-wal").st_size > self.wal_cap
        except OSError:
            return False

    def set_room(self, room: float) -> None:
        """Store thread: after a size check, commits may add ``room`` more bytes before the next."""
        self.room, self.committed_bytes = room, 0

    def truncate_wal(self) -> None:
        """Checkpoint everything and cut the WAL to nothing (store thread: no write is under way, so a
        steady stream of commits cannot keep the checkpointer from ever finishing). Busy (the
        checkpoint thread is at it): tried again at the next size check."""
        self.conn.execute("PRAGMA busy_timeout=100")
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self.conn.execute("PRAGMA busy_timeout=5000")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._exec, fn, *args)

    def close(self) -> None:
        self._exec.shutdown(wait=True)
        if self._ckpt is not None:
            self._ckpt_stop.set()
            self._ckpt.join(timeout=10)
            self._ckpt = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- writes (run on the store thread) --------------------------------------------------------
    def record_hello(self, hello: agent_pb2.Hello, now_ns: int) -> int:
        """Store the hello; return the highest seq already durable for (node, boot_id)."""
        c = self.conn
        with _tx(c):
            c.execute(
                "INSERT INTO nodes VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(node, boot_id) DO UPDATE SET "
                "last_seen_ns=excluded.last_seen_ns, hello=excluded.hello",
                (hello.node, hello.boot_id, hello.agent_version, hello.host_ip, hello.pod_ip,
                 hello.SerializeToString(), now_ns, now_ns),
            )
            if hello.HasField("capabilities"):
                self._put_caps(hello.node, hello.boot_id, hello.capabilities, now_ns)
        return self.acked_seq(hello.node, hello.boot_id)

    def acked_seq(self, node: str, boot_id: str) -> int:
        """The highest seq durable for (node, boot_id), including seqs retention has pruned."""
        row = self.conn.execute("SELECT MAX(seq) FROM batches WHERE node=? AND boot_id=?", (node, boot_id)).fetchone()
        return max(int(row[0] or 0), self.watermarks.get((node, boot_id), 0))

    def stored_seqs(self, node: str, boot_id: str) -> list[int]:
        """The seqs of (node, boot_id) whose batches are stored (head and chunks), ascending."""
        return [seq for _, b, seq, _, _ in stored_batches(self.conn, node) if b == boot_id]

    def compact(self, received_before_ns: int) -> compaction.CompactReport:
        """Compact every head whose oldest batch was received before ``received_before_ns``, at once."""
        return compaction.compact_due(self.conn, received_before_ns, self.watermarks)

    def replay_acked(self, node: str, boot_ids: list[str]) -> dict[str, int]:
        """For earlier boots an agent will replay from its on-disk spool: what is already durable."""
        return {b: self.acked_seq(node, b) for b in boot_ids}

    def _put_caps(self, node: str, boot_id: str, rep: common_pb2.CapabilityReport, now_ns: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO capabilities VALUES (?,?,?,?)",
                          (node, boot_id, rep.SerializeToString(), now_ns))

    def record_capabilities(self, node: str, boot_id: str, rep: common_pb2.CapabilityReport, now_ns: int) -> None:
        with _tx(self.conn):
            self._put_caps(node, boot_id, rep, now_ns)

    def commit_batch(self, node: str, batch: agent_pb2.Batch, received_ns: int) -> bool:
        """Commit one batch atomically. False when it was a duplicate (already stored)."""
        return self.commit_batches([(node, batch, received_ns)])[0]

    def commit_batches(self, items: list[tuple[str, agent_pb2.Batch, int]],
                       max_bytes: float = math.inf) -> list[bool]:
        """Commit several batches in ONE transaction (group commit); per batch: False when a duplicate.

        Either all of them are durable when this returns, or (on error) none is, so acks sent after
        it never cover a lost batch. Once the transaction holds ``max_bytes`` it ends there: the
        outcomes cover that first part only, and the caller commits the rest next.
        """
        c = self.conn
        fresh: list[bool] = []
        seen: dict[tuple[str, str], int] = {}
        start = self.committed_bytes
        with _tx(c):
            for node, batch, received_ns in items:
                if self.committed_bytes - start >= max_bytes:
                    break
                if batch.seq <= self.watermarks.get((node, batch.boot_id), 0):
                    fresh.append(False)  # its row was pruned by retention, but it was stored once
                    continue
                blob = encode_samples(batch)
                cur = c.execute(
                    "INSERT OR IGNORE INTO batches VALUES (?,?,?,?,?,?,?,?)",
                    (node, batch.boot_id, batch.seq, batch.time_unix_nano, received_ns, len(batch.samples),
                     batch.spool_dropped, blob),
                )
                if cur.rowcount == 0:
                    fresh.append(False)
                    continue
                fresh.append(True)
                self.committed_bytes += ROW_BYTES + (len(blob) if blob else 0)
                for r in batch.probe_results:
                    self._put_result(r)
                for e in batch.events:
                    c.execute("INSERT INTO events VALUES (?,?,?,?)",
                              (e.time_unix_nano, e.level, e.node or node, e.message))
                seen[(node, batch.boot_id)] = max(received_ns, seen.get((node, batch.boot_id), 0))
            for (node, boot), t in seen.items():
                c.execute("UPDATE nodes SET last_seen_ns=? WHERE node=? AND boot_id=?", (t, node, boot))
        return fresh

    def _put_result(self, r: common_pb2.ProbeResult) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO probe_results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (r.probe_id, r.kind, r.source_node, r.target_node, r.target_address, r.path, int(r.ok),
             r.error, json.dumps(dict(r.figures), sort_keys=True), json.dumps(dict(r.params), sort_keys=True),
             r.detail_json, r.started_unix_nano, r.finished_unix_nano, r.SerializeToString()),
        )

    def record_result(self, r: common_pb2.ProbeResult) -> None:
        with _tx(self.conn):
            self._put_result(r)

    def record_event(self, e: common_pb2.LogEvent) -> None:
        with _tx(self.conn):
            self.conn.execute("INSERT INTO events VALUES (?,?,?,?)", (e.time_unix_nano, e.level, e.node, e.message))

    # ---- reads -------------------------------------------------------------------------------
    def probe_results(self, kind: str = "", source: str = "", target: str = "",
                      limit: int = 100) -> list[common_pb2.ProbeResult]:
        q = "SELECT raw FROM probe_results WHERE 1=1"
        args: list[Any] = []
        for col, val in (("kind", kind), ("source_node", source), ("target_node", target)):
            if val:
                q += f" AND {col}=?"
                args.append(val)
        q += " ORDER BY finished_ns DESC LIMIT ?"
        args.append(max(1, min(limit or 100, 10_000)))
        out = []
        for (raw,) in self.conn.execute(q, args):
            r = common_pb2.ProbeResult()
            r.ParseFromString(raw)
            out.append(r)
        return out

    def latest_capabilities(self) -> dict[str, common_pb2.CapabilityReport]:
        out = {}
        for node, raw in self.conn.execute("SELECT node, report FROM capabilities"):
            rep = common_pb2.CapabilityReport()
            rep.ParseFromString(raw)
            out[node] = rep
        return out

    def known_nodes(self) -> list[agent_pb2.Hello]:
        out = []
        for (raw,) in self.conn.execute(
                "SELECT hello FROM nodes n WHERE last_seen_ns = (SELECT MAX(last_seen_ns) FROM nodes m "
                "WHERE m.node = n.node) GROUP BY node ORDER BY node"):
            h = agent_pb2.Hello()
            if raw:
                h.ParseFromString(raw)
                out.append(h)
        return out


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring an older database to ``SCHEMA_VERSION``, one step per version, each in one transaction:
    either the whole step happens or nothing changes."""
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        return
    version = int(row[0])
    for target, step in ((2, _samples_to_blobs), (3, capability_migration.migrate), (4, compaction.ensure_schema)):
        if version >= target:
            continue
        with _tx(conn):
            step(conn)
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(target),))
        version = target


def _samples_to_blobs(conn: sqlite3.Connection) -> None:
    """Schema 1 (one row per sample, batches WITHOUT ROWID) → 2 (one samples blob per batch)."""
    conn.execute("ALTER TABLE batches RENAME TO batches_v1")
    conn.execute(BATCHES_DDL)
    grouped: dict[tuple[str, str, int], list[common_pb2.Sample]] = {}
    for node, boot_id, seq, name, labels, value, t_ns in conn.execute(
            "SELECT node, boot_id, seq, name, labels, value, t_ns FROM samples ORDER BY rowid"):
        grouped.setdefault((node, boot_id, seq), []).append(common_pb2.Sample(
            name=name, labels=json.loads(labels), value=value, time_unix_nano=t_ns))
    for node, boot_id, seq, agent_ns, received_ns, n, dropped in conn.execute(
            "SELECT node, boot_id, seq, agent_ns, received_ns, n_samples, spool_dropped FROM batches_v1"
    ).fetchall():
        smp = grouped.get((node, boot_id, seq))
        blob = agent_pb2.Batch(samples=smp).SerializeToString() if smp else None
        conn.execute("INSERT INTO batches VALUES (?,?,?,?,?,?,?,?)",
                     (node, boot_id, seq, agent_ns, received_ns, n, dropped, blob))
    conn.execute("DROP TABLE samples")
    conn.execute("DROP TABLE batches_v1")


class _tx:
    """BEGIN IMMEDIATE … COMMIT, ROLLBACK on error (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
