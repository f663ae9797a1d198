"""tcp and udp probes end to end in the lab: collector → target agent starts a one-off iperf3
server → source agent runs the client → result stored; and the scheduler's node exclusivity."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from probe_helpers import run_probe, running_cluster  # type: ignore[import-not-found]

from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from cniscope.core import grpcutil
from cniscope.lab.lab import Lab

pytestmark = [pytest.mark.netns]


@pytest.fixture(scope="module")
def bw_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_cluster(tmp_path_factory.mktemp("bw")) as lab:
        yield lab


def iperf3_pids_in(netns_name: str) -> set[int]:
    """iperf3 processes inside one lab namespace (other labs on the machine may run their own)."""
    want = os.stat(f"/run/netns/{netns_name}").st_ino
    out = subprocess.run(["pgrep", "-x", "iperf3"], capture_output=True, text=True, check=False).stdout
    pids = set()
    for pid in (int(x) for x in out.split()):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == want:
                pids.add(pid)
        except OSError:
            continue
    return pids


@pytest.mark.parametrize("path", ["host", "pod"])
def test_tcp_end_to_end(bw_cluster: Lab, path: str) -> None:
    r, progress = asyncio.run(run_probe(bw_cluster.local_collector, "tcp", "node1", "node2", path, duration="1"))
    assert r.ok, r.error
    assert r.figures["received_gbps"] > 0.05
    assert r.figures["sent_gbps"] >= r.figures["received_gbps"] * 0.99
    assert r.figures["sender_mean_rtt_us"] > 0
    assert any("one-off iperf3 server on node2" in m for m in progress)
    assert any("iperf3 tcp" in m for m in progress)
    node2 = bw_cluster.nodes()[1]
    assert r.target_address == (node2.pod_ip if path == "pod" else node2.host_ip)
    # the one-off server served one test and is gone: nothing listens between tests
    time.sleep(0.2)
    assert iperf3_pids_in(node2.pod_netns if path == "pod" else node2.netns) == set()


def test_tcp_reverse_has_no_sender_rtt(bw_cluster: Lab) -> None:
    r, _ = asyncio.run(run_probe(bw_cluster.local_collector, "tcp", "node1", "node3", "host",
                                 duration="1", reverse="true"))
    assert r.ok, r.error
    assert "sender_mean_rtt_us" not in r.figures
    assert r.figures["received_gbps"] > 0.05


def test_udp_at_a_modest_rate_is_valid_and_lossless(bw_cluster: Lab) -> None:
    r, _ = asyncio.run(run_probe(bw_cluster.local_collector, "udp", "node2", "node3", "pod",
                                 duration="1", rate_mbps="20"))
    assert r.ok, r.error
    f = r.figures
    assert f["valid"] == 1.0
    assert f["requested_gbps"] == pytest.approx(0.02)
    assert f["achieved_gbps"] == pytest.approx(0.02, rel=0.05)
    assert f["loss_pct"] < 1.0
    assert f["receiver_packets"] > 0.9 * f["sender_packets"]


def test_bandwidth_probes_sharing_a_node_run_one_after_the_other(bw_cluster: Lab) -> None:
    async def both() -> list[common_pb2.ProbeResult]:
        a = run_probe(bw_cluster.local_collector, "tcp", "node1", "node2", duration="1")
        b = run_probe(bw_cluster.local_collector, "tcp", "node3", "node2", duration="1")
        return [r for r, _ in await asyncio.gather(a, b)]

    r1, r2 = asyncio.run(both())
    assert r1.ok, r1.error
    assert r2.ok, r2.error
    first, second = sorted([r1, r2], key=lambda r: r.started_unix_nano)
    assert first.finished_unix_nano <= second.started_unix_nano, "two bandwidth probes on node2 overlapped"


def test_missing_server_port_is_a_clear_failure_and_agent_keeps_serving(bw_cluster: Lab, tmp_path: Path) -> None:
    # an explicit address with nothing serving iperf3 there: no target node → no one-off server
    node3 = bw_cluster.nodes()[2]

    async def go() -> common_pb2.ProbeResult:
        async with grpcutil.insecure_channel(bw_cluster.local_collector) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            req = common_pb2.ProbeRequest(kind="tcp", source_node="node1", target_address=node3.host_ip,
                                          path="host", params={"duration": "1"})
            res = None
            async for upd in stub.RunProbe(req):
                if upd.WhichOneof("body") == "result":
                    res = upd.result
            assert res is not None
            return res

    r = asyncio.run(go())
    assert not r.ok
    assert "Connection refused" in r.error
    assert not r.figures  # no zeroed figures
    ok, _ = asyncio.run(run_probe(bw_cluster.local_collector, "rtt", "node1", "node3", count="2", interval="0.05"))
    assert ok.ok, ok.error
    assert json.loads(ok.detail_json)["rtts_us"]


def test_udp_above_what_the_sender_can_offer_is_marked_invalid(bw_cluster: Lab) -> None:
    r, _ = asyncio.run(run_probe(bw_cluster.local_collector, "udp", "node1", "node2", "host",
                                 duration="1", rate_mbps="25000"))
    assert r.ok, r.error
    assert r.figures["valid"] == 0.0
    assert "below 95% of the requested" in json.loads(r.detail_json)["invalid_reason"]


def test_a_caller_that_goes_away_does_not_free_the_nodes_early(bw_cluster: Lab) -> None:
    async def go() -> tuple[common_pb2.ProbeResult, common_pb2.ProbeResult]:
        async with grpcutil.insecure_channel(bw_cluster.local_collector) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            call = stub.RunProbe(common_pb2.ProbeRequest(kind="tcp", source_node="node1", target_node="node2",
                                                         path="host", params={"duration": "2"}))
            first = await call.read()
            probe_a = first.progress.probe_id  # type: ignore[attr-defined]
            call.cancel()  # the caller leaves while node1 → node2 is measuring
            b, _ = await run_probe(bw_cluster.local_collector, "tcp", "node3", "node2", duration="1")
            for _ in range(50):
                resp = await stub.ListProbeResults(cluster_pb2.ListProbeResultsRequest(kind="tcp", limit=50))
                a = [r for r in resp.results if r.probe_id == probe_a]
                if a:
                    return a[0], b
                await asyncio.sleep(0.1)
            raise AssertionError("the abandoned probe's result never arrived")

    a, b = asyncio.run(go())
    assert a.ok, a.error
    assert b.ok, b.error
    assert a.finished_unix_nano <= b.started_unix_nano, "the second probe ran while the abandoned one measured"
