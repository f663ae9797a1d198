"""End to end in the lab: real agents stream into a real collector over TCP; probes go both ways."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import grpc
import pytest

from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from cniscope.collector.store import read_samples
from cniscope.core import grpcutil
from cniscope.lab.lab import Lab
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns]


async def _watch_until_three(address: str) -> set[str]:
    seen: set[str] = set()
    async with grpcutil.insecure_channel(address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        call = stub.Watch(cluster_pb2.WatchRequest(), wait_for_ready=True)
        async for ev in call:
            if ev.WhichOneof("body") == "node" and ev.node.status == cluster_pb2.NODE_STATUS_CONNECTED:
                seen.add(ev.node.node)
            if len(seen) == 3:
                call.cancel()
                break
    return seen


def test_three_agents_appear_via_watch_within_10s(lab: Lab, tmp_path: Path) -> None:
    t0 = time.monotonic()
    lab.start_cluster(db=tmp_path / "c.db", sample_interval=0.5)
    seen = asyncio.run(asyncio.wait_for(_watch_until_three(lab.local_collector), timeout=10 - (time.monotonic() - t0)))
    assert seen == {"node1", "node2", "node3"}


async def _rtt(address: str, path: str) -> common_pb2.ProbeResult:
    async with grpcutil.insecure_channel(address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        req = common_pb2.ProbeRequest(kind="rtt", source_node="node1", target_node="node2", path=path,
                                      params={"count": "5", "interval": "0.05"})
        result = None
        async for upd in stub.RunProbe(req):
            if upd.WhichOneof("body") == "result":
                result = upd.result
        assert result is not None
        return result


@pytest.mark.parametrize("path", ["host", "pod"])
def test_rtt_probe_result_comes_back_and_is_stored(cluster: Lab, tmp_path: Path, path: str) -> None:
    r = asyncio.run(_rtt(cluster.local_collector, path))
    assert r.ok, r.error
    node2 = cluster.nodes()[1]
    assert r.target_address == (node2.pod_ip if path == "pod" else node2.host_ip)
    assert r.figures["received"] == 5
    assert r.figures["loss_pct"] == 0
    f = r.figures
    assert 0 < f["min_us"]
    assert f["min_us"] <= f["p50_us"] <= f["p99_us"] <= f["max_us"]
    db = sqlite3.connect(tmp_path / "collector.db")
    row = db.execute("SELECT kind, source_node, target_node, ok, path FROM probe_results WHERE probe_id=?",
                     (r.probe_id,)).fetchone()
    assert row == ("rtt", "node1", "node2", 1, path)


def test_every_agent_stores_each_batch_once_from_seq_1_with_its_samples(cluster: Lab, tmp_path: Path) -> None:
    """The agents' batches land in the store, each (node, seq) once and counting from 1, carrying the
    agent's own samples. (That a batch is acknowledged only once it is durable is checked against an
    in-process collector with slow commits: tests/integration/test_pipeline_delivery.py.)"""
    db = sqlite3.connect(tmp_path / "collector.db")

    def stored() -> list[tuple[str, int, int, int]]:
        rows = db.execute("SELECT node, COUNT(*), COUNT(DISTINCT seq), MIN(seq) FROM batches GROUP BY node").fetchall()
        names = {r.name for r in read_samples(db, 0, time.time_ns())}
        everyone = {r[0] for r in rows} == {"node1", "node2", "node3"}
        return rows if everyone and {"agent_cpu_millicores", "agent_rss_bytes"} <= names else []

    rows = wait_for(stored, 20, "batches with the agents' own samples from node1..node3")
    for node, n, distinct, first in rows:
        assert (n, first) == (distinct, 1), f"{node}: {n} rows, {distinct} distinct seqs, first {first}"


def test_probe_to_an_unknown_node_is_a_clear_error(cluster: Lab) -> None:
    async def go() -> None:
        async with grpcutil.insecure_channel(cluster.local_collector) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            req = common_pb2.ProbeRequest(kind="rtt", source_node="node9", target_node="node2")
            async for _ in stub.RunProbe(req):
                pass

    with pytest.raises(grpc.aio.AioRpcError) as ei:
        asyncio.run(go())
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    assert "node9" in (ei.value.details() or "")


def test_health_and_reflection_are_served(cluster: Lab) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async def go() -> tuple[int, list[str]]:
        async with grpcutil.insecure_channel(cluster.local_collector) as ch:
            h = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
            call = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names: list[str] = []
            async for resp in call:
                names = [s.name for s in resp.list_services_response.service]
                break
            return h.status, names

    status, names = asyncio.run(go())
    assert status == 1  # SERVING
    assert "cniscope.api.v1.AgentHub" in names
    assert "cniscope.api.v1.Cluster" in names
