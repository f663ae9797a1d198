"""Storage bounded by size (issue 13, finding 9): a collector fed over its real gRPC path with several
times what its bound holds stays under the bound on disk (file, WAL and shared memory, sampled all
along), prunes the oldest samples to do so, and keeps every run and probe result.

Scaled down to run in seconds: a 32 MiB bound instead of gigabytes, samples that compress badly (a
new series each with 512 random bytes in its labels: ~600 bytes a sample compressed, ~1.1 KB as
received), compaction after half a second instead of minutes, a size check every 0.1 s, not 2 s."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from cniscope.api.v1 import agent_pb2, common_pb2, runs_pb2
from cniscope.collector import store as store_module
from cniscope.collector.runs import run_store
from cniscope.collector.server import Collector
from cniscope.core import grpcutil
from cniscope.core.config import CollectorConfig

sys.path.insert(0, str(Path(__file__).parents[1]))
import pipeline_kit as kit  # type: ignore[import-not-found]  # noqa: E402

BOUND = 32 * 1024 * 1024
STREAMS = 4
SAMPLES_PER_BATCH = 25
BATCHES_PER_STREAM = 1300     # 130,000 samples: ~2.3x what the bound holds compressed, ~4.3x as received
RESULTS = 40


def _disk(db: Path) -> int:
    return sum(os.path.getsize(p) for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


async def _feed(address: str, node: str, first_result: int) -> int:
    """One agent stream: Hello, then batches of samples that each start a new series, with a probe
    result every so often; returns the highest seq acknowledged."""
    q: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue(maxsize=64)
    boot = os.urandom(8).hex()

    async def gen() -> AsyncIterator[agent_pb2.AgentMessage]:
        while (m := await q.get()) is not None:
            yield m

    async with grpcutil.insecure_channel(address) as ch:
        from cniscope.api.v1 import agent_pb2_grpc

        call = agent_pb2_grpc.AgentHubStub(ch).Connect(gen())
        await q.put(agent_pb2.AgentMessage(hello=agent_pb2.Hello(node=node, boot_id=boot, host_ip="198.18.1.1",
                                                                 time_unix_nano=time.time_ns())))
        acked = 0

        async def read() -> None:
            nonlocal acked
            async for m in call:
                if m.WhichOneof("body") == "ack":
                    acked = max(acked, m.ack.seq)

        reader = asyncio.create_task(read())
        results = iter(range(first_result, first_result + RESULTS // STREAMS))
        for seq in range(1, BATCHES_PER_STREAM + 1):
            now = time.time_ns()
            b = agent_pb2.Batch(boot_id=boot, seq=seq, time_unix_nano=now, samples=[
                common_pb2.Sample(name="conntrack_entries", labels={f"flow{k}": os.urandom(128).hex() for k in range(4)},
                                  value=float(seq * 1000 + i), time_unix_nano=now)
                for i in range(SAMPLES_PER_BATCH)])
            if seq % 40 == 0 and (pid := next(results, None)) is not None:
                b.probe_results.add(probe_id=f"keep-{pid}", kind="rtt", source_node=node, ok=True,
                                    figures={"p50_us": 100.0 + pid}, finished_unix_nano=now)
            await q.put(agent_pb2.AgentMessage(batch=b))
        await kit.until(lambda: acked == BATCHES_PER_STREAM, within=120, what=f"{node} acked")
        await q.put(None)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        return acked


async def test_a_collector_fed_several_times_its_bound_stays_under_it_and_keeps_every_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 0.2)
    db = tmp_path / "c.db"
    port = kit.free_port()
    col = Collector(CollectorConfig(db=str(db), listen=f"127.0.0.1:{port}", max_db_bytes=BOUND))
    col.upkeep.check_every, col.upkeep.compact_every, col.upkeep.chunk_seconds = 0.1, 0.5, 0.5
    run = runs_pb2.Run(run_id="r-keep", label="A: kept", kind="suite", status=runs_pb2.RUN_STATUS_DONE,
                       started_unix_nano=time.time_ns())
    run_store.insert_run(col.store.conn, run)
    await col.start()
    peak = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _disk(db))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        acked = await asyncio.gather(*(_feed(kit.address(col), f"n{i}", i * (RESULTS // STREAMS))
                                       for i in range(STREAMS)))
        assert acked == [BATCHES_PER_STREAM] * STREAMS
        await asyncio.sleep(1.0)  # a last compaction and check
        stop.set()
        await watcher
        u = col.upkeep.usage
        fed = col.counters.samples
        assert fed == STREAMS * BATCHES_PER_STREAM * SAMPLES_PER_BATCH
        # what was fed is twice the bound and more, even compressed (each sample a new series, ~600 B)
        assert fed * 600 > 2 * BOUND
        assert u.compacted_samples >= fed * 0.9
        assert u.pruned_samples > fed / 2
        assert peak <= BOUND, f"peak {peak} bytes on disk over the bound {BOUND}"
        assert u.disk_bytes <= BOUND
        scraped = {line.split(" ")[0]: float(line.split(" ")[1])
                   for line in generate_latest(col.metrics.registry).decode().splitlines()
                   if line.startswith("cniscope_collector_db_")}
        assert scraped["cniscope_collector_db_max_bytes"] == BOUND
        assert 0 < scraped["cniscope_collector_db_bytes"] <= BOUND
        assert scraped["cniscope_collector_db_pruned_samples_total"] == u.pruned_samples
        assert scraped["cniscope_collector_db_time_to_full_seconds"] >= 0
    finally:
        stop.set()
        await asyncio.gather(watcher, return_exceptions=True)
        await col.stop()
    c = sqlite3.connect(db)
    assert c.execute("SELECT run_id, label FROM runs").fetchall() == [("r-keep", "A: kept")]
    kept = {r[0] for r in c.execute("SELECT probe_id FROM probe_results")}
    assert kept == {f"keep-{i}" for i in range(RESULTS)}
    assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    c.close()
