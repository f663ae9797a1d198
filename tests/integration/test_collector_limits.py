"""Bounded, with a clear status (issue 13, findings 6 and 8): a stream with no Hello, a watcher that
does not read, a stream that reads far ahead of its commits, an agent that does not read, the
unauthenticated Health.List that logged a traceback per call."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cniscope.api.v1 import cluster_pb2, common_pb2
from cniscope.collector import agent_hub, state, watchers
from cniscope.core import grpcutil

sys.path.insert(0, str(Path(__file__).parents[1]))
import h2_raw  # type: ignore[import-not-found]  # noqa: E402
import hostile_kit as hk  # type: ignore[import-not-found]  # noqa: E402
import pipeline_kit as kit  # type: ignore[import-not-found]  # noqa: E402


def _big(boot: str, seq: int, n: int) -> Any:
    now = time.time_ns()
    return hk.agent_pb2.AgentMessage(batch=hk.agent_pb2.Batch(boot_id=boot, seq=seq, time_unix_nano=now, samples=[
        common_pb2.Sample(name=f"series_{i % 500}", labels={"i": str(i)}, value=float(i), time_unix_nano=now)
        for i in range(n)]))


async def test_a_stream_without_hello_ends_quickly_and_says_why(tmp_path: Path) -> None:
    c = await kit.start_collector(tmp_path)
    silent = await hk.FakeAgent(kit.address(c)).start()  # opens the stream, never says Hello
    t0 = time.monotonic()
    try:
        code, details = await silent.status(within=30)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert details == f"no Hello within {agent_hub.HELLO_SECONDS:g}s of opening the stream"
        assert time.monotonic() - t0 < agent_hub.HELLO_SECONDS + 10
    finally:
        await silent.close()
        await c.stop()


async def test_a_watcher_that_stops_reading_is_cut_off_with_a_clear_status(tmp_path: Path) -> None:
    c = await kit.start_collector(tmp_path)
    port = int(kit.address(c).rsplit(":", 1)[1])
    agent = await hk.FakeAgent(kit.address(c)).start(hk.hello("n1", "b1", "k1"))
    raw = h2_raw.RawH2("127.0.0.1", port)
    try:
        await kit.until(agent.welcomed, what="the agent")
        req = cluster_pb2.WatchRequest(include_samples=True).SerializeToString()
        sid = raw.open("/cniscope.api.v1.Cluster/Watch", h2_raw.grpc_prefix(len(req)) + req, end=True)
        await kit.until(lambda: len(c.state.watchers) == 1, what="the watcher")
        watcher = next(iter(c.state.watchers))
        for seq in range(1, 31):  # ~0.5 MB each, never read by the watcher
            agent.send(_big("b1", seq, 8000))
        await kit.until(lambda: not c.state.watchers, what="the watcher cut off")
        assert "fell" in watcher.cut
        assert "watch again for a fresh snapshot" in watcher.cut
        assert watcher.queued == 0
        assert len(watcher) == 0
        raw.grant(sid)  # the client reads again: what was sent, then the status
        await kit.until(lambda: raw.status(sid) != "", what="the watch's status")
        assert raw.status(sid) == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
        assert "behind" in raw.message(sid)
        assert f"(cap {watchers.WATCH_BYTES:,} bytes of unread events)" in raw.message(sid)  # names the bound
        assert "watch again" in raw.message(sid)
        await kit.until(lambda: agent.acked() == 30, what="ingest unaffected")
    finally:
        raw.close()
        await agent.close()
        await c.stop()


async def test_a_stream_reads_ahead_of_its_commits_by_bytes_not_batches(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    c = await kit.start_collector(tmp_path)
    commit = c.store.commit_batches

    def slow(*args: Any, **kw: Any) -> Any:
        time.sleep(0.05)  # a slow disk
        return commit(*args, **kw)

    monkeypatch.setattr(c.store, "commit_batches", slow)
    agent = await hk.FakeAgent(kit.address(c)).start(hk.hello("n1", "b1", "k1"))
    batch_bytes = _big("b1", 1, 6000).ByteSize()
    seen: list[int] = []
    try:
        await kit.until(lambda: "n1" in c.state.sessions, what="the agent")
        session = c.state.sessions["n1"]
        for seq in range(1, 41):
            agent.send(_big("b1", seq, 6000))
        while agent.acked() < 40:
            seen.append(session.inflight_bytes)
            await asyncio.sleep(0.005)
        assert max(seen) >= agent_hub.READ_AHEAD_BYTES // 2          # it did read ahead ...
        assert max(seen) <= agent_hub.READ_AHEAD_BYTES + batch_bytes  # ... by at most the bound and a batch
    finally:
        await agent.close()
        await c.stop()


async def test_an_agent_that_does_not_read_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "OUTBOX_BYTES", 64 * 1024)
    c = await kit.start_collector(tmp_path)
    try:
        s = state.Session("n9", "b")
        big = b"x" * 40_000
        assert s.send(big)
        assert not s.send(big)
        assert s.closed.is_set()
    finally:
        await c.stop()


async def test_health_list_answers_without_a_token_and_logs_no_traceback(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "client").write_text("c-token")
    (tmp_path / "agent").write_text("a-token")
    c = await kit.start_collector(tmp_path, token_file=str(tmp_path / "client"),
                                  agent_token_file=str(tmp_path / "agent"))
    try:
        with caplog.at_level(logging.INFO):
            async with grpcutil.insecure_channel(kit.address(c)) as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                for _ in range(3):
                    got = await stub.List(health_pb2.HealthListRequest(), timeout=5)
                    assert got.statuses[""].status == health_pb2.HealthCheckResponse.SERVING
                    assert got.statuses["cniscope.api.v1.Cluster"].status == health_pb2.HealthCheckResponse.SERVING
                with pytest.raises(grpc.aio.AioRpcError) as ei:
                    await stub.Check(health_pb2.HealthCheckRequest(service="s" * 5000), timeout=5)
                assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    finally:
        await c.stop()
