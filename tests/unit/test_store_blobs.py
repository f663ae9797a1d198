"""Raw samples live as one blob per batch: what goes in comes back out through read_samples (names,
labels, values, per-sample and defaulted times, time window, node filter), probe results and events
stay out of the blob, and a database written by schema 1 (one row per sample) is migrated in place."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.collector.blobs import decode_samples, encode_samples
from cniscope.collector.store import SCHEMA_VERSION, Store, read_samples
from tests.waiting import wait_for

S = 10**9


def _batch(seq: int, t: int, **kw: Any) -> agent_pb2.Batch:
    return agent_pb2.Batch(boot_id="b1", seq=seq, time_unix_nano=t, samples=[
        common_pb2.Sample(name="cni_cpu_millicores", labels={"process": "cilium-agent"}, value=4.0 + seq,
                          time_unix_nano=t - S),
        common_pb2.Sample(name="cni_rss_bytes", value=1e8),  # no time of its own: the batch's
    ], **kw)


def test_read_samples_round_trip(tmp_path: Path) -> None:
    st = Store(tmp_path / "c.db")
    for node in ("n1", "n2"):
        for seq in range(1, 11):
            assert st.commit_batch(node, _batch(seq, 1000 * S + seq * S), 0)
    rows = list(read_samples(st.conn, 0, 2000 * S))
    assert len(rows) == 40
    cpu = [r for r in rows if r.node == "n1" and r.name == "cni_cpu_millicores"]
    assert [r.value for r in cpu] == [4.0 + s for s in range(1, 11)]
    assert cpu[0].labels == {"process": "cilium-agent"}
    assert cpu[0].t_ns == 1000 * S
    rss = [r for r in rows if r.node == "n1" and r.name == "cni_rss_bytes"]
    assert rss[0].t_ns == 1001 * S
    assert rss[0].labels == {}
    # window on sample time, node and name filters
    win = list(read_samples(st.conn, 1003 * S, 1005 * S, nodes=["n2"], names=["cni_cpu_millicores"]))
    assert [(r.node, r.seq, r.t_ns) for r in win] == [("n2", 4, 1003 * S), ("n2", 5, 1004 * S), ("n2", 6, 1005 * S)]
    st.close()


def test_probe_results_and_events_stay_out_of_the_blob() -> None:
    b = _batch(1, 5 * S, probe_results=[common_pb2.ProbeResult(probe_id="p", detail_json="x" * 5000)],
               events=[common_pb2.LogEvent(message="hi")])
    blob = encode_samples(b)
    assert blob is not None
    assert len(blob) < 500
    assert len(b.probe_results) == 1  # the batch itself is untouched
    assert [s.name for s in decode_samples(blob)] == ["cni_cpu_millicores", "cni_rss_bytes"]
    assert encode_samples(agent_pb2.Batch(boot_id="b", seq=1)) is None


SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE nodes (
    node TEXT NOT NULL, boot_id TEXT NOT NULL, agent_version TEXT, host_ip TEXT, pod_ip TEXT,
    hello BLOB, first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL,
    PRIMARY KEY (node, boot_id));
CREATE TABLE batches (
    node TEXT NOT NULL, boot_id TEXT NOT NULL, seq INTEGER NOT NULL,
    agent_ns INTEGER NOT NULL, received_ns INTEGER NOT NULL, n_samples INTEGER NOT NULL,
    spool_dropped INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node, boot_id, seq)) WITHOUT ROWID;
CREATE TABLE samples (
    node TEXT NOT NULL, boot_id TEXT NOT NULL, seq INTEGER NOT NULL,
    name TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL, t_ns INTEGER NOT NULL);
CREATE INDEX samples_node_t ON samples (node, t_ns);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def test_schema_1_database_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    c = sqlite3.connect(db)
    c.executescript(SCHEMA_V1)
    for seq in (1, 2, 3):
        c.execute("INSERT INTO batches VALUES ('n1','b1',?,?,?,?,0)", (seq, seq * S, seq * S, 0 if seq == 3 else 2))
        if seq < 3:
            c.executemany("INSERT INTO samples VALUES ('n1','b1',?,?,?,?,?)", [
                (seq, "cpu", '{"process": "kube-proxy"}', float(seq), seq * S),
                (seq, "rss", "{}", 1e6 * seq, seq * S)])
    c.commit()
    c.close()
    st = Store(db)
    assert st.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    tables = {r[0] for r in st.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "samples" not in tables
    assert "batches_v1" not in tables
    rows = list(read_samples(st.conn, 0, 10 * S))
    assert [(r.seq, r.name, r.labels, r.value) for r in rows] == [
        (1, "cpu", {"process": "kube-proxy"}, 1.0), (1, "rss", {}, 1e6),
        (2, "cpu", {"process": "kube-proxy"}, 2.0), (2, "rss", {}, 2e6)]
    # the duplicate guard survived: all three seqs, including the sample-less one, are known
    assert st.commit_batch("n1", _batch(3, 3 * S), 0) is False
    assert st.commit_batch("n1", _batch(4, 4 * S), 0) is True
    assert st.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    st.close()
    Store(db).close()  # opening a migrated database again changes nothing


def checkpointed(db: Path) -> bool:
    """Every frame of the WAL is back in the database file. The wal-index (the -shm file, laid out in
    sqlite.org/walformat.html, native byte order) holds the WAL's last frame (mxFrame, offset 16) and
    how far a checkpoint has copied (nBackfill, offset 96)."""
    head = Path(f"{db}-shm").read_bytes()[:100]
    last_frame = int.from_bytes(head[16:20], sys.byteorder)
    backfilled = int.from_bytes(head[96:100], sys.byteorder)
    return last_frame > 0 and backfilled == last_frame


def test_wal_is_checkpointed_off_the_writer(tmp_path: Path) -> None:
    """Commits never checkpoint (auto-checkpoint is off on the writer); the store's own thread does,
    about once a second, so the WAL is reused from its start instead of growing with every batch."""
    st = Store(tmp_path / "w.db")
    assert st.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    wal = tmp_path / "w.db-wal"
    sizes = []
    seq = 0
    for _ in range(3):
        for _ in range(10):
            items = []
            for _ in range(100):
                seq += 1
                items.append(("n1", _batch(seq, seq * S), 0))
            st.commit_batches(items)
        sizes.append(wal.stat().st_size)
        wait_for(lambda: checkpointed(tmp_path / "w.db"), 10, "the checkpointer to copy the WAL back")
    assert sizes[0] > 300_000
    assert sizes[2] <= sizes[0] * 1.2, sizes  # reused, not appended to (3x without the checkpointer)
    st.close()
