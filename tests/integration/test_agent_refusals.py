"""The agent never dies of one bad result (issue 13, finding 1).

A result the collector refuses (a probe id it does not accept) used to be resent on every reconnect
for ever, and a write to a stream the collector had already ended (``RPC already finished``) ended
the agent process. Now a refused batch comes back as a typed ``Refusal``: the agent logs it, counts
it and drops it from its spool; and no way a stream ends stops the agent's connection loop.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cniscope.agent.agent_metrics import AgentMetrics
from cniscope.agent.collector_session import StreamEnded
from cniscope.agent.node_agent import NodeAgent
from cniscope.api.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from cniscope.core import grpcutil
from cniscope.core.config import AgentConfig

sys.path.insert(0, str(Path(__file__).parents[1]))
import pipeline_kit as kit  # type: ignore[import-not-found]  # noqa: E402


def _agent(address: str, **kw: Any) -> NodeAgent:
    base: dict[str, Any] = {"host_ip": "198.18.0.11", "backoff_initial": 0.01, "backoff_max": 0.05,
                            "backoff_jitter": 0.0}
    base.update(kw)
    return NodeAgent(AgentConfig(node="n1", collector=address, **base))


def _sample(agent: NodeAgent, value: float) -> None:
    agent.sealer.add_samples([common_pb2.Sample(name="x", value=value)])
    agent.sealer.seal()


async def test_a_refused_result_is_dropped_counted_and_never_resent(tmp_path: Path) -> None:
    col = await kit.start_collector(tmp_path)
    agent = _agent(kit.address(col))
    _sample(agent, 1.0)
    agent.sealer.add_result(common_pb2.ProbeResult(probe_id="p" * 200, kind="rtt", ok=True))  # seq 2: refused
    _sample(agent, 3.0)
    task = asyncio.create_task(agent.session.connection_loop())
    try:
        await kit.until(lambda: agent.spool.depth == 0, what="the spool drained")
        assert agent.spool.refused == 1
        # a while later: still one refusal, the same stream, and new batches keep landing
        for v in (4.0, 5.0):
            _sample(agent, v)
        await kit.until(lambda: col.state.nodes["n1"].last_seq == 5 and agent.spool.depth == 0,
                        what="later batches acked")
        await asyncio.sleep(0.3)
        assert not task.done()
        assert agent.session.reconnects == 0
        assert col.counters.refused == 1
        assert agent.spool.refused == 1
        stored = await col.store.call(col.store.stored_seqs, "n1", agent.boot_id)
        assert stored == [1, 3, 4, 5]
        logged = " ".join(e.message for e in col.state.recent_logs)
        assert f"refused batch {agent.boot_id[:16]}/2: probe result probe_id must be" in logged
        text = agent_metrics_text(agent)
        assert "cniscope_agent_spool_refused_total{node=\"n1\"} 1.0" in text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await col.stop()


def agent_metrics_text(agent: NodeAgent) -> str:
    from prometheus_client import generate_latest

    return generate_latest(AgentMetrics(agent).registry).decode()


class _HangUp(agent_pb2_grpc.AgentHubServicer):
    """Welcomes, reads three batches, then ends the stream (alternately with OK and with a refusal)
    while the agent is still writing."""

    def __init__(self) -> None:
        self.sessions = 0

    async def Connect(self, it: AsyncIterator[agent_pb2.AgentMessage],  # noqa: N802
                      ctx: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[agent_pb2.CollectorMessage]:
        self.sessions += 1
        await ctx.send_initial_metadata((grpcutil.ADMITTED_HEADER,))  # as the collector does
        n = 0
        async for m in it:
            if m.WhichOneof("body") == "hello":
                yield agent_pb2.CollectorMessage(welcome=agent_pb2.Welcome())
                continue
            n += 1
            if n >= 3:
                if self.sessions % 2:
                    return
                await ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused")


async def test_the_connection_loop_survives_streams_ended_under_its_writes() -> None:
    """Before: the loop died within a few sessions with InvalidStateError('RPC already finished')."""
    port = kit.free_port()
    server = grpc.aio.server()
    hub = _HangUp()
    agent_pb2_grpc.add_AgentHubServicer_to_server(hub, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    agent = _agent(f"127.0.0.1:{port}")
    for i in range(1000):  # plenty still to send whenever the collector hangs up
        agent.sealer.add_samples([common_pb2.Sample(name="x", value=float(i))] * 50)
        agent.sealer.seal()
    task = asyncio.create_task(agent.session.connection_loop())
    try:
        await kit.until(lambda: hub.sessions >= 60 or task.done(), within=60, what="60 sessions")
        assert not task.done(), repr(task.exception())
        assert agent.spool.depth == 1000  # nothing was acknowledged, nothing lost
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop(0)


class _FinishedCall:
    """A call the collector already ended: every write raises as grpc.aio does."""

    async def write(self, msg: Any) -> None:
        raise asyncio.InvalidStateError("RPC already finished.")

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    async def details(self) -> str:
        return "message larger than max"


async def test_a_write_to_a_finished_call_ends_the_session_with_the_collectors_status() -> None:
    agent = _agent("127.0.0.1:1")
    _sample(agent, 1.0)
    with pytest.raises(StreamEnded, match="RESOURCE_EXHAUSTED: message larger than max"):
        await agent.session._send_loop(_FinishedCall())  # type: ignore[arg-type]


async def test_an_unexpected_failure_of_a_session_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = _agent("127.0.0.1:1")
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("a bug in a session")

    monkeypatch.setattr(agent.session, "_session", broken)
    task = asyncio.create_task(agent.session.connection_loop())
    try:
        await kit.until(lambda: calls >= 3 or task.done(), what="three sessions")
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
