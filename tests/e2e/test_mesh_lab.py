"""The light mesh in the lab: each agent pings its hash-chosen peers every interval and the results
land in the collector's store as rtt results marked ``mesh``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from probe_helpers import running_cluster  # type: ignore[import-not-found]

from cniscope.agent.mesh_peers import choose_peers
from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from cniscope.core import grpcutil

pytestmark = [pytest.mark.netns]


async def mesh_results(address: str) -> list[common_pb2.ProbeResult]:
    async with grpcutil.insecure_channel(address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        resp = await stub.ListProbeResults(cluster_pb2.ListProbeResultsRequest(kind="rtt", limit=500))
        return [r for r in resp.results if r.params.get("mesh") == "true"]


def test_mesh_rounds_cover_the_chosen_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNISCOPE_MESH_INTERVAL", "1.5")
    monkeypatch.setenv("CNISCOPE_MESH_FANOUT", "1")
    with running_cluster(tmp_path, nodes=3) as lab:
        nodes = [n.name for n in lab.nodes()]
        expected = {(n, choose_peers(n, nodes, 1)[0]) for n in nodes}
        deadline = time.monotonic() + 15
        seen: set[tuple[str, str]] = set()
        results: list[common_pb2.ProbeResult] = []
        while time.monotonic() < deadline and seen != expected:
            time.sleep(0.5)
            results = asyncio.run(mesh_results(lab.local_collector))
            seen = {(r.source_node, r.target_node) for r in results if r.ok}
    assert seen == expected  # exactly the fanout-1 choice of each node, nobody else
    r = results[0]
    assert r.path == "pod"
    assert r.figures["p50_us"] > 0
    assert r.probe_id.startswith("mesh-")
