"""The size bound's order and figures: near the bound old aggregates go before recent raw samples
(raw older than the floor would go first of all), recent raw goes when nothing else is left, and
runs and probe results never go — when they alone approach the bound, a warning and a figure say so.
Time-to-full follows growth; a WAL that commits kept from resetting is cut back."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from pathlib import Path

import pytest

from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.collector import aggregates, size_guard
from cniscope.collector.aggregates import read_aggregates
from cniscope.collector.storage_upkeep import StorageUpkeep
from cniscope.collector.store import Store, read_samples

MIB = 1024 * 1024
MIN = aggregates.MINUTE_NS


def _recent_raw(st: Store, batches: int = 50) -> int:
    now = time.time_ns()
    items = [("n1", agent_pb2.Batch(boot_id="b", seq=s, time_unix_nano=now + s, samples=[
        common_pb2.Sample(name="cpu", labels={"process": f"p{i}"}, value=float(s + i), time_unix_nano=now + s)
        for i in range(20)]), now) for s in range(1, batches + 1)]
    st.commit_batches(items)
    st.compact(2**62)
    return batches * 20


def _old_aggregates(st: Store, series: int = 4000) -> None:
    """Two days old, one row per series-minute with values that do not compress."""
    rng = random.Random(3)
    minute = (time.time_ns() - 2 * 86400 * 10**9) // MIN
    rows = {(f"flow_{i}", "{}", minute + i % 5): [1, rng.random(), rng.random(), rng.random()]
            for i in range(series)}
    st.conn.execute("BEGIN")
    aggregates.put(st.conn, "n1", rows)
    st.conn.execute("COMMIT")


def _bound_between(st: Store, low_live: int, high_live: int) -> int:
    """A max_bytes whose budget puts ``high_live`` over HIGH and ``low_live`` under LOW."""
    shm = os.path.getsize(st.path + "-shm")
    budget = (high_live / size_guard.HIGH + low_live / size_guard.LOW) / 2
    assert low_live / size_guard.LOW < high_live / size_guard.HIGH, "the scenario needs more old aggregates"
    return int(budget + size_guard.WAL_RESERVE * MIB + shm)  # a bound under 16 MiB: the WAL's share is 1 MiB


def _live(st: Store) -> int:
    return size_guard.measure(st.conn, st.path, 1 << 40).live


def _wal(st: Store) -> int:
    return os.path.getsize(st.path + "-wal")


def _agg_bytes(st: Store) -> int:
    return int(st.conn.execute("SELECT SUM(LENGTH(body)) FROM aggregate_chunks").fetchone()[0] or 0)


async def test_old_aggregates_go_before_recent_raw_and_probe_results_never(tmp_path: Path) -> None:
    st = Store(tmp_path / "c.db")
    raw = _recent_raw(st)
    _old_aggregates(st)
    st.record_result(common_pb2.ProbeResult(probe_id="keep", kind="rtt", ok=True, figures={"p50_us": 1.0}))
    live, agg = _live(st), _agg_bytes(st)
    up = StorageUpkeep(st, _bound_between(st, live - agg, live))
    assert await up.enforce()
    assert up.usage.pruned_aggregates > 0
    assert up.usage.pruned_samples == 0                       # recent raw is kept while older data can go
    assert len(list(read_samples(st.conn, 0, 2**62))) == raw
    assert _live(st) <= size_guard.LOW * size_guard.measure(st.conn, st.path, up.max_bytes).budget
    # now a bound that only the recent raw samples can make room for: they become aggregates, then go
    up2 = StorageUpkeep(st, size_guard.WAL_RESERVE * MIB + int(_live(st) / 2))
    await up2.enforce()
    await up2.enforce()
    assert up2.usage.pruned_samples == raw
    assert list(read_samples(st.conn, 0, 2**62)) == []
    assert [r.probe_id for r in st.probe_results()] == ["keep"]
    st.close()


async def test_raw_older_than_the_floor_goes_first(tmp_path: Path) -> None:
    st = Store(tmp_path / "c.db")
    old = time.time_ns() - 3 * 3600 * 10**9
    rng = random.Random(5)
    st.commit_batches([("n1", agent_pb2.Batch(boot_id="old", seq=s, time_unix_nano=old + s * 10**9, samples=[
        common_pb2.Sample(name="x", labels={"i": str(i)}, value=rng.random(), time_unix_nano=old + s * 10**9)
        for i in range(50)]), old) for s in range(1, 301)])
    st.compact(2**62)
    _old_aggregates(st, series=500)
    recent = _recent_raw(st)
    live = _live(st)
    old_raw = int(st.conn.execute("SELECT SUM(LENGTH(body)) FROM chunks WHERE boot_id='old'").fetchone()[0])
    up = StorageUpkeep(st, _bound_between(st, live - old_raw // 2, live))
    assert await up.enforce()
    assert up.usage.pruned_samples > 0
    assert up.usage.pruned_aggregates == 0
    assert len([r for r in read_samples(st.conn, 0, 2**62) if r.boot_id == "b"]) == recent
    assert read_aggregates(st.conn, old - MIN, old + 400 * 10**9)  # the old raw lives on as aggregates
    st.close()


async def test_protected_data_near_the_bound_is_warned_about_and_kept(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    st = Store(tmp_path / "c.db")
    for i in range(300):  # ~3 MB of probe results: the bound's budget is ~5 MB
        st.record_result(common_pb2.ProbeResult(probe_id=f"p{i}", kind="http", ok=True, detail_json="x" * 10_000))
    up = StorageUpkeep(st, 8 * MIB)
    with caplog.at_level(logging.WARNING, logger="cniscope.collector.storage"):
        await up.enforce()
        await up.enforce()
    budget = size_guard.measure(st.conn, st.path, 8 * MIB).budget
    assert up.usage.protected_bytes >= 0.5 * budget
    warnings = [r.getMessage() for r in caplog.records if "never pruned" in r.getMessage()]
    assert len(warnings) == 1, warnings   # once, not at every check
    assert st.conn.execute("SELECT COUNT(*) FROM probe_results").fetchone()[0] == 300
    st.close()


async def test_time_to_full_follows_growth(tmp_path: Path) -> None:
    st = Store(tmp_path / "c.db")
    up = StorageUpkeep(st, 64 * MIB)
    await up.enforce()
    assert up.usage.time_to_full_s == math.inf           # nothing has grown yet
    for i in range(200):
        st.record_result(common_pb2.ProbeResult(probe_id=f"p{i}", kind="http", ok=True, detail_json="x" * 5000))
    await asyncio.sleep(0.05)
    await up.enforce()
    assert 0 < up.usage.time_to_full_s < math.inf
    assert up.usage.disk_bytes > 0
    st.close()


async def test_a_wal_grown_past_its_share_is_cut_back(tmp_path: Path) -> None:
    st = Store(tmp_path / "c.db")
    up = StorageUpkeep(st, 8 * MIB)   # the WAL's share: 1 MiB
    _recent_raw(st, batches=2000)     # several MiB through the WAL; no checkpoint ran meanwhile
    assert _wal(st) > MIB
    # a size check cuts it back unless the checkpoint thread holds the WAL just then (busy: the next
    # check tries again), so within a few checks; on an idle machine the first one does it
    for _check in range(20):
        await up.enforce()
        if _wal(st) < MIB:
            break
        await asyncio.sleep(0.25)
    assert _wal(st) < MIB
    st.close()
