"""Raw samples compressed into chunks (issue 13, finding 9): every batch comes back exactly (seqs,
times, labels, values bit for bit, in order), agent-like figures cost under 2 bytes a sample, the
duplicate guard survives compaction, retention splits a chunk at its cutoff, aggregates are
compressed too, and a database of the previous schema (one blob per batch) migrates in place."""

from __future__ import annotations

import math
import random
import sqlite3
import struct
from pathlib import Path

import pytest

from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.collector import chunks, compaction, retention
from cniscope.collector.aggregates import read_aggregates
from cniscope.collector.store import SCHEMA_VERSION, Store, read_samples
from cniscope.core.errors import StoreError

S = 10**9
MIN = retention.MINUTE_NS


def _bits(v: float) -> int:
    return int(struct.unpack(">Q", struct.pack(">d", v))[0])


def test_every_kind_of_value_comes_back_bit_for_bit() -> None:
    rng = random.Random(7)
    values = [0.0, -0.0, 1.0, -1.0, 0.1, 0.3, 1234.57, 2.0**53 - 1, 2.0**53, 2.0**60, 1e300, -1e-300, 5e-324,
              math.pi, 1 / 3, 123.456789012, 0.001, 99.999, 1e15 + 0.5]
    values += [rng.random() * 10**rng.randint(-5, 12) for _ in range(200)]
    b = chunks.ChunkBuilder()
    for seq, v in enumerate(values, start=1):
        b.add(seq, seq * S, seq * S + 5, seq // 7, seq % 3, [("x", {}, v, seq * S - 3),
                                                             ("y", {"k": "v"}, float(seq), 0)])
    got = chunks.decode(chunks.encode(b.chunk))
    assert got.series == b.chunk.series
    assert got.batches == b.chunk.batches
    assert [_bits(bt.samples[0][2]) for bt in got.batches] == [_bits(v) for v in values]
    # one column per series: an inexact decimal (1/3) in "x" leaves "y" in its compact decimal form
    assert got.batches[0].samples[1][1] == 1 * S  # a sample without a time takes its batch's


def test_layouts_that_change_and_batches_without_samples_round_trip() -> None:
    b = chunks.ChunkBuilder()
    b.add(1, 10 * S, 11 * S, 0, 0, [("a", {}, 1.0, 0), ("b", {"p": "q", "a": "z"}, 2.0, 0)])
    b.add(2, 11 * S, 12 * S, 0, 0, [])
    b.add(4, 12 * S, 13 * S, 2, 9, [("b", {"a": "z", "p": "q"}, 3.0, 0), ("a", {}, 4.0, 0), ("a", {}, 5.0, 7)])
    got = chunks.decode(chunks.encode(b.chunk))
    assert got == b.chunk
    assert got.series == [("a", ()), ("b", (("a", "z"), ("p", "q")))]  # labels sorted: one series


def test_a_corrupt_chunk_is_a_store_error() -> None:
    b = chunks.ChunkBuilder()
    b.add(1, S, S, 0, 0, [("a", {}, 1.0, 0)])
    body = chunks.encode(b.chunk)
    for bad in (b"", b"\x09" + body[1:], body[:-3], body[:1] + b"\x78\x9c" + b"\x00" * 10):
        with pytest.raises(StoreError):
            chunks.decode(bad)


def _agent_like_batches(node_seed: int, n: int, series: int = 20) -> list[agent_pb2.Batch]:
    """An agent's figures at 1 Hz: millicores with 3 decimals, RSS moving by pages, constant counts."""
    rng = random.Random(node_seed)
    rss, ct = [150e6 + 4096 * i for i in range(series)], [20000.0] * series
    out = []
    t0 = 1_700_000_000 * S
    for seq in range(1, n + 1):
        t = t0 + seq * S + rng.randint(0, 3_000_000)
        samples = []
        for i in range(series):
            kind = i % 4
            if kind == 0:
                v = round(max(0.0, 4 + rng.gauss(0, 1.5)), 3)
            elif kind == 1:
                rss[i] += 4096 * rng.choice((0, 0, 0, 1, -1))
                v = rss[i]
            elif kind == 2:
                v = 1234.0
            else:
                ct[i] += rng.randint(-50, 50)
                v = ct[i]
            samples.append(common_pb2.Sample(name=f"m{kind}", labels={"process": f"p{i}"}, value=v, time_unix_nano=t))
        out.append(agent_pb2.Batch(boot_id="b1", seq=seq, time_unix_nano=t + 2_000_000, samples=samples))
    return out


def _store_with(tmp_path: Path, batches: list[agent_pb2.Batch], node: str = "n1") -> Store:
    st = Store(tmp_path / "c.db")
    st.record_hello(agent_pb2.Hello(node=node, boot_id="b1"), 0)
    st.commit_batches([(node, b, b.time_unix_nano + 1_000_000) for b in batches])
    return st


def test_compaction_keeps_every_sample_and_agent_like_figures_cost_under_2_bytes(tmp_path: Path) -> None:
    batches = _agent_like_batches(1, 600)
    st = _store_with(tmp_path, batches)
    before = list(read_samples(st.conn, 0, 2**62))
    assert len(before) == 600 * 20
    head_bytes = st.conn.execute("SELECT SUM(LENGTH(samples)) FROM batches").fetchone()[0]
    rep = st.compact(2**62)
    assert (rep.batches, rep.samples) == (600, 12000)
    assert st.conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0
    after = list(read_samples(st.conn, 0, 2**62))
    assert after == before
    body = st.conn.execute("SELECT SUM(LENGTH(body)) FROM chunks").fetchone()[0]
    assert body / 12000 < 2.0, body / 12000
    assert head_bytes / body > 25
    # a time window and filters read the chunks as they read the head
    t = batches[100].samples[0].time_unix_nano
    win = list(read_samples(st.conn, t, t + 2 * S, nodes=["n1"], names=["m2"]))
    assert [(r.seq, r.value) for r in win] == [(b.seq, s.value) for b in batches for s in b.samples
                                               if s.name == "m2" and t <= s.time_unix_nano <= t + 2 * S]
    assert {r.seq for r in win} >= {101, 102}
    assert len(win) >= 10
    assert list(read_samples(st.conn, t, t, nodes=["other"])) == []
    st.close()


def test_the_duplicate_guard_and_acks_survive_compaction(tmp_path: Path) -> None:
    batches = _agent_like_batches(2, 30)
    st = _store_with(tmp_path, batches)
    st.compact(2**62)
    assert st.stored_seqs("n1", "b1") == list(range(1, 31))
    assert st.commit_batch("n1", batches[4], 1) is False           # compacted: still a duplicate
    assert st.record_hello(agent_pb2.Hello(node="n1", boot_id="b1"), 1) == 30
    nxt = agent_pb2.Batch(boot_id="b1", seq=31, time_unix_nano=batches[-1].time_unix_nano + S,
                          samples=[common_pb2.Sample(name="m2", value=1.0)])
    assert st.commit_batch("n1", nxt, nxt.time_unix_nano) is True
    st.close()
    again = Store(tmp_path / "c.db")
    assert again.commit_batch("n1", batches[29], 1) is False
    assert again.stored_seqs("n1", "b1") == list(range(1, 32))
    rows = list(read_samples(again.conn, 0, 2**62))
    assert len(rows) == 30 * 20 + 1
    assert rows[-1].seq == 31
    again.close()


def test_retention_splits_a_chunk_at_its_cutoff_and_aggregates_are_compressed(tmp_path: Path) -> None:
    st = Store(tmp_path / "r.db")
    t0 = 100 * MIN
    items = []
    for seq in range(1, 181):  # 3 minutes at 1 Hz, value = seq
        t = t0 + (seq - 1) * S
        items.append(("n1", agent_pb2.Batch(boot_id="b1", seq=seq, time_unix_nano=t, samples=[
            common_pb2.Sample(name="cpu", labels={"process": "cilium-agent"}, value=float(seq),
                              time_unix_nano=t)]), t))
    st.commit_batches(items)
    st.compact(2**62)
    rep = retention.prune_node(st.conn, "n1", 102 * MIN + 30 * S, st.watermarks)
    assert (rep.samples_deleted, rep.chunks_deleted) == (120, 1)
    aggs = read_aggregates(st.conn, 0, 200 * MIN)
    assert [(a.minute, a.n, a.vmin, a.vmean, a.vmax, a.labels) for a in aggs] == [
        (100, 60, 1.0, 30.5, 60.0, '{"process": "cilium-agent"}'),
        (101, 60, 61.0, 90.5, 120.0, '{"process": "cilium-agent"}')]
    left = [r.value for r in read_samples(st.conn, 0, 200 * MIN)]
    assert left == [float(s) for s in range(121, 181)]   # the rest of the chunk, re-encoded
    assert st.stored_seqs("n1", "b1") == list(range(121, 181))
    # a series-minute costs a few bytes, not a ~100-byte row
    body = st.conn.execute("SELECT SUM(LENGTH(body)) FROM aggregate_chunks").fetchone()[0]
    assert body < 120
    assert retention.prune_aggregates(st.conn, 101 * MIN + 1) == 0     # the chunk's last minute is 101
    assert retention.prune_aggregates(st.conn, 102 * MIN) == 2
    assert read_aggregates(st.conn, 0, 200 * MIN) == []
    st.close()


# The schema a database of the previous release has (version 3): raw samples one blob per batch.
SCHEMA_V3 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE nodes (
    node TEXT NOT NULL, boot_id TEXT NOT NULL, agent_version TEXT, host_ip TEXT, pod_ip TEXT,
    hello BLOB, first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL,
    PRIMARY KEY (node, boot_id));
CREATE TABLE batches (
    node TEXT NOT NULL, boot_id TEXT NOT NULL, seq INTEGER NOT NULL,
    agent_ns INTEGER NOT NULL, received_ns INTEGER NOT NULL, n_samples INTEGER NOT NULL,
    spool_dropped INTEGER NOT NULL DEFAULT 0, samples BLOB, UNIQUE (node, boot_id, seq));
CREATE INDEX batches_node_t ON batches (node, agent_ns);
CREATE TABLE probe_results (
    probe_id TEXT PRIMARY KEY, kind TEXT NOT NULL, source_node TEXT, target_node TEXT,
    target_address TEXT, path TEXT, ok INTEGER NOT NULL, error TEXT, figures TEXT NOT NULL,
    params TEXT NOT NULL, detail TEXT, started_ns INTEGER, finished_ns INTEGER, raw BLOB);
CREATE TABLE capabilities (node TEXT PRIMARY KEY, boot_id TEXT, report BLOB NOT NULL, t_ns INTEGER NOT NULL);
CREATE TABLE events (t_ns INTEGER NOT NULL, level TEXT NOT NULL, node TEXT, message TEXT NOT NULL);
CREATE TABLE samples_1m (
    node TEXT NOT NULL, name TEXT NOT NULL, labels TEXT NOT NULL, minute INTEGER NOT NULL,
    n INTEGER NOT NULL, vmin REAL NOT NULL, vmean REAL NOT NULL, vmax REAL NOT NULL,
    PRIMARY KEY (node, name, labels, minute)) WITHOUT ROWID;
CREATE TABLE batch_watermarks (
    node TEXT NOT NULL, boot_id TEXT NOT NULL, pruned_upto INTEGER NOT NULL,
    PRIMARY KEY (node, boot_id)) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema_version', '3');
"""


def test_a_schema_3_database_migrates_in_place(tmp_path: Path) -> None:
    db = tmp_path / "v3.db"
    c = sqlite3.connect(db)
    c.executescript(SCHEMA_V3)
    batches = _agent_like_batches(3, 50)
    for b in batches:
        c.execute("INSERT INTO batches VALUES ('n1','b1',?,?,?,?,0,?)",
                  (b.seq, b.time_unix_nano, b.time_unix_nano, len(b.samples), b.SerializeToString()))
    c.execute("INSERT INTO batch_watermarks VALUES ('n1','b0',77)")
    c.execute("INSERT INTO samples_1m VALUES ('n1','cpu','{}',5,60,1.0,2.0,3.0)")
    c.execute("INSERT INTO probe_results (probe_id, kind, ok, figures, params) VALUES ('p1','rtt',1,'{}','{}')")
    c.commit()
    c.close()
    st = Store(db)
    assert st.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert SCHEMA_VERSION == 4
    before = list(read_samples(st.conn, 0, 2**62))
    assert len(before) == 50 * 20
    assert [r.seq for r in before[::20]] == list(range(1, 51))
    # the old blobs are the head: compacted like any other, nothing lost, duplicates still known
    assert st.compact(2**62).batches == 50
    assert list(read_samples(st.conn, 0, 2**62)) == before
    assert st.commit_batch("n1", batches[0], 1) is False
    assert st.commit_batch("n1", agent_pb2.Batch(boot_id="b0", seq=77), 1) is False
    # old uncompressed aggregates are read and aged out beside the new ones
    assert [(a.minute, a.n, a.vmean) for a in read_aggregates(st.conn, 0, 10 * MIN)] == [(5, 60, 2.0)]
    assert retention.prune_aggregates(st.conn, 6 * MIN) == 1
    assert st.conn.execute("SELECT COUNT(*) FROM probe_results").fetchone()[0] == 1
    assert st.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    st.close()


def test_compaction_is_due_by_the_age_of_a_heads_oldest_batch(tmp_path: Path) -> None:
    st = Store(tmp_path / "c.db")
    for node, received in (("old", 100 * S), ("new", 500 * S)):
        st.commit_batch(node, agent_pb2.Batch(boot_id="b", seq=1, time_unix_nano=received,
                                              samples=[common_pb2.Sample(name="x", value=1.0)]), received)
    assert compaction.due_heads(st.conn, 300 * S) == [("old", "b", 1)]
    assert st.compact(300 * S).batches == 1
    assert st.conn.execute("SELECT node FROM batches").fetchall() == [("new",)]
    st.close()
