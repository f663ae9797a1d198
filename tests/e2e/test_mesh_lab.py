"""The light mesh in the lab: each agent pings its hash-chosen peers every interval and the results
land in the collector's store as rtt results marked ``mesh``."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest
from probe_helpers import running_cluster  # type: ignore[import-not-found]

from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from cniscope.core import grpcutil

pytestmark = [pytest.mark.netns]


async def mesh_results(address: str) -> list[common_pb2.ProbeResult]:
    async with grpcutil.insecure_channel(address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        resp = await stub.ListProbeResults(cluster_pb2.ListProbeResultsRequest(kind="rtt", limit=500))
        return [r for r in resp.results if r.params.get("mesh") == "true"]


def rendezvous_choice(node: str, peers: list[str]) -> str:
    """Rendezvous hashing as the mesh defines it: the peer whose SHA-256 of "node NUL peer" (first
    8 bytes, big-endian) is highest."""
    def score(peer: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{node}\x00{peer}".encode()).digest()[:8], "big")
    return max((p for p in peers if p != node), key=score)


def test_mesh_rounds_cover_the_chosen_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNISCOPE_MESH_INTERVAL", "1.5")
    monkeypatch.setenv("CNISCOPE_MESH_FANOUT", "1")
    with running_cluster(tmp_path, nodes=3) as lab:
        nodes = [n.name for n in lab.nodes()]
        expected = {(n, rendezvous_choice(n, nodes)) for n in nodes}
        deadline = time.monotonic() + 30
        results: list[common_pb2.ProbeResult] = []
        latest: dict[str, list[str]] = {}
        # a node that connected before the others chose among the peers it knew then; once the
        # peer table is complete every round of a node goes to the same, rendezvous-chosen peer
        while time.monotonic() < deadline:
            time.sleep(0.5)
            results = asyncio.run(mesh_results(lab.local_collector))
            latest = {n: [r.target_node for r in sorted((r for r in results if r.ok and r.source_node == n),
                                                        key=lambda r: r.started_unix_nano)][-2:] for n in nodes}
            if all(len(ts) == 2 for ts in latest.values()) and {(n, t) for n, ts in latest.items() for t in ts} == expected:
                break
    assert all(len(ts) == 2 for ts in latest.values()), latest  # two rounds or more from every node
    # stable from round to round and bounded: one target per node (fanout 1), never itself, and
    # exactly the rendezvous choice of each node, nobody else
    assert {(n, t) for n, ts in latest.items() for t in ts} == expected, (latest, expected)
    r = results[0]
    assert r.path == "pod"
    assert r.figures["p50_us"] > 0
    assert r.probe_id.startswith("mesh-")
