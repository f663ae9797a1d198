"""Queries that scale and errors that stay small (issue 13, findings 7 and 8).

5,000 nodes with the real agent's state shape (a node of a real 4-node lab recording, its figures
widened to the ~8 KB NodeState the issue measured) are listed in pages and streamed in the Watch
snapshot; one node's series and capability report are capped with an error naming the node and the
cap; inputs quoted in errors are cut to 200 bytes; a compare request is bounded; the RunProbe rate
limit is per client."""

from __future__ import annotations

import gzip
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from cniscope.api.v1 import (
    capabilities_pb2,
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    runs_pb2,
    runs_pb2_grpc,
)
from cniscope.client.grpc_collector import CollectorClient
from cniscope.core import grpcutil, security

sys.path.insert(0, str(Path(__file__).parents[1]))
import hostile_kit as hk  # type: ignore[import-not-found]  # noqa: E402
import pipeline_kit as kit  # type: ignore[import-not-found]  # noqa: E402

RECORDING = Path(__file__).parents[1] / "fixtures" / "recordings" / "lab4.jsonl.gz"
MAX_QUOTED = 200


def real_shape() -> cluster_pb2.NodeState:
    """The largest NodeState of the lab recording, with the per-process and per-map series of an agent
    on a Cilium node added: about 8 KB."""
    best = cluster_pb2.NodeState()
    for line in gzip.open(RECORDING, "rt"):
        d = json.loads(line)
        if "node" in d.get("event", {}):
            st = json_format.ParseDict(d["event"], cluster_pb2.ClusterEvent()).node
            if st.ByteSize() > best.ByteSize():
                best = st
    for proc in ("cilium-agent", "cilium-operator", "kube-proxy", "coredns", "hubble-relay"):
        for m in ("cni_cpu_millicores", "cni_rss_bytes", "cni_threads"):
            best.figures[f"{m}{{process={proc}}}"] = 1.0
    for i in range(40):
        best.figures[f"bpf_map_fill_ratio{{map=cilium_map_{i:02d},type=hash}}"] = 0.5
    return best


async def test_list_nodes_and_the_watch_snapshot_answer_for_5000_nodes(tmp_path: Path) -> None:
    c = await kit.start_collector(tmp_path)
    shape = real_shape()
    assert 7_000 < shape.ByteSize() < 10_000
    for i in range(5000):
        st = cluster_pb2.NodeState()
        st.CopyFrom(shape)
        st.node = f"node-{i:05d}"
        c.state.nodes[st.node] = st
    assert sum(st.ByteSize() for st in c.state.nodes.values()) > 8 * grpcutil.MAX_MESSAGE_BYTES
    try:
        t0 = time.monotonic()
        async with CollectorClient(kit.address(c)) as client:
            nodes = await client.list_nodes()
        assert [n.node for n in nodes] == sorted(c.state.nodes)
        async with grpcutil.insecure_channel(kit.address(c)) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            page = await stub.ListNodes(cluster_pb2.ListNodesRequest(page_size=100))
            assert len(page.nodes) == 100
            assert page.next_page_token
            seen = 0
            async for ev in stub.Watch(cluster_pb2.WatchRequest()):
                if ev.WhichOneof("body") == "node":
                    seen += 1
                if ev.WhichOneof("body") == "snapshot_done":
                    break
            assert seen == 5000
            assert (await stub.GetNode(cluster_pb2.GetNodeRequest(node="node-04999"))).node == "node-04999"
        assert time.monotonic() - t0 < 120
    finally:
        await c.stop()


async def test_one_node_cannot_make_queries_too_large_for_everyone(tmp_path: Path) -> None:
    c = await kit.start_collector(tmp_path, max_node_series=2_000, max_capability_bytes=256 * 1024)
    addr = kit.address(c)
    agent = await hk.FakeAgent(addr).start(hk.hello("big", "b1", "k1"))
    agents = [agent]
    try:
        await kit.until(agent.welcomed, what="the agent")
        now = time.time_ns()
        for seq in range(1, 4):  # 3 x 5,000 new series
            agent.send(hk.agent_pb2.AgentMessage(batch=hk.agent_pb2.Batch(boot_id="b1", seq=seq, time_unix_nano=now,
                       samples=[common_pb2.Sample(name="s", labels={"id": f"{seq}-{i}"}, value=1.0, time_unix_nano=now)
                                for i in range(5000)])))
        await kit.until(lambda: agent.acked() == 3, what="the batches stored")
        c.state.settle()
        assert len(c.state.nodes["big"].figures) == 2_000
        warning = next(e.message for e in c.state.recent_logs if "cap of" in e.message)
        assert warning.startswith("node big sends more series than its cap of 2,000 series")
        assert "CNISCOPE_MAX_NODE_SERIES" in warning

        unit = common_pb2.UnitReport(name="bpf", ok=True, available=True, bpf=capabilities_pb2.BpfDetail(
            maps=[capabilities_pb2.BpfMap(name=f"m{i}" * 40) for i in range(200)]))
        report = common_pb2.CapabilityReport(units=[unit] * 30)
        assert report.ByteSize() > 256 * 1024
        agent.send(hk.agent_pb2.AgentMessage(capabilities=report))
        code, details = await agent.status()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.startswith(f"node 'big': capability report of {report.ByteSize():,} bytes exceeds the cap")
        assert "CNISCOPE_MAX_CAPABILITY_BYTES" in details
        big_hello = await hk.FakeAgent(addr).start(hk.hello("other", "b2", "k2", capabilities=report))
        agents.append(big_hello)
        assert (await big_hello.status())[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        async with grpcutil.insecure_channel(addr) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            assert (await stub.GetNode(cluster_pb2.GetNodeRequest(node="big"))).ByteSize() < 1024 * 1024
            assert [n.node for n in (await stub.ListNodes(cluster_pb2.ListNodesRequest())).nodes] == ["big"]
    finally:
        for a in agents:
            await a.close()
        await c.stop()


async def test_errors_quote_inputs_at_most_200_bytes_and_compare_is_bounded(tmp_path: Path) -> None:
    c = await kit.start_collector(tmp_path)
    huge = "n" * 20_000
    try:
        async with grpcutil.insecure_channel(kit.address(c)) as ch:
            stub, runs = cluster_pb2_grpc.ClusterStub(ch), runs_pb2_grpc.RunsStub(ch)
            calls: dict[str, Callable[[], Awaitable[Any]]] = {
                "GetNode": lambda: stub.GetNode(cluster_pb2.GetNodeRequest(node=huge)),
                "GetRun": lambda: runs.GetRun(runs_pb2.RunRef(run_id=huge)),
                "Compare one huge id": lambda: runs.Compare(runs_pb2.CompareRequest(run_ids=[huge])),
            }
            for what, call in calls.items():
                with pytest.raises(grpc.aio.AioRpcError) as ei:
                    await call()
                details = ei.value.details() or ""
                assert ei.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), what
                assert "20000" in details, what
                assert len(details.encode()) < MAX_QUOTED + 200, (what, len(details))
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                async for _ in stub.RunProbe(common_pb2.ProbeRequest(kind="rtt", source_node=huge, target_node="x")):
                    pass
            assert ei.value.code() == grpc.StatusCode.NOT_FOUND
            assert len((ei.value.details() or "").encode()) < MAX_QUOTED + 200
            # the 300 KB compare request that built a 32 MB answer
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await runs.Compare(runs_pb2.CompareRequest(run_ids=[f"r{i:04d}" + "x" * 90 for i in range(3000)]))
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "3000 runs to compare; at most 16 side by side" in (ei.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await runs.Compare(runs_pb2.CompareRequest(run_ids=["a", "a"]))
            assert "named twice" in (ei.value.details() or "")
    finally:
        await c.stop()


def _people(tmp: Path) -> dict[str, Path]:
    ca = kit.make_ca("cniscope test CA")
    files: dict[str, bytes] = {"ca.pem": kit.pem(ca[1])}
    files["server.pem"], files["server.key"] = kit.issue(ca, "collector", server=True)
    for who in ("alice", "bob"):
        files[f"{who}.pem"], files[f"{who}.key"] = kit.issue(ca, who, server=False)
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    return {name: tmp / name for name in files}


async def test_the_runprobe_rate_limit_is_per_client(tmp_path: Path) -> None:
    pki = _people(tmp_path)
    c = await kit.start_collector(tmp_path, tls_cert=str(pki["server.pem"]), tls_key=str(pki["server.key"]),
                                  tls_ca=str(pki["ca.pem"]), probe_rate=1.0, probe_burst=5)

    async def fire(who: str, n: int) -> list[grpc.StatusCode]:
        creds = security.client_credentials(str(pki["ca.pem"]), str(pki[f"{who}.pem"]), str(pki[f"{who}.key"]))
        codes = []
        async with grpcutil.insecure_channel(kit.address(c), credentials=creds) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            for _ in range(n):
                try:
                    async for _ in stub.RunProbe(common_pb2.ProbeRequest(kind="rtt", source_node="none",
                                                                         target_node="x")):
                        pass
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
        return codes

    try:
        alice = await fire("alice", 30)
        assert alice.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 20  # alice used up her own bucket ...
        bob = await fire("bob", 3)
        assert bob == [grpc.StatusCode.NOT_FOUND] * 3                 # ... and bob still gets through
    finally:
        await c.stop()
