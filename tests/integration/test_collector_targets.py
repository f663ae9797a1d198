"""Probe targets come from what the collector knows, not from what an agent announces (issue 13,
finding 2), and every cloud metadata address is refused everywhere, the dns resolver included."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from cniscope.api.v1 import capabilities_pb2, cluster_pb2_grpc, common_pb2
from cniscope.collector.target_trust import TargetTrust, per_node
from cniscope.core import grpcutil, netpolicy

sys.path.insert(0, str(Path(__file__).parents[1]))
import hostile_kit as hk  # type: ignore[import-not-found]  # noqa: E402
import pipeline_kit as kit  # type: ignore[import-not-found]  # noqa: E402

METADATA = ["169.254.169.254", "169.254.170.2", "fd00:ec2::254", "fd00:ec2::253", "fd20:ce::254",
            "100.100.100.200", "168.63.129.16", "192.0.0.192", "[::ffff:100.100.100.200]", "0x646464c8"]


async def _probe(address: str, **req: Any) -> tuple[grpc.StatusCode, str]:
    async with grpcutil.insecure_channel(address) as ch:
        try:
            async for _ in cluster_pb2_grpc.ClusterStub(ch).RunProbe(common_pb2.ProbeRequest(**req), timeout=10):
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("address", METADATA)
def test_every_cloud_metadata_address_is_forbidden(address: str) -> None:
    ip = netpolicy.parse_address(address)
    assert ip is not None
    assert netpolicy.forbidden_reason(ip) is not None, address


async def test_an_announced_address_is_not_a_probe_target(tmp_path: Path) -> None:
    c = await kit.start_collector(tmp_path)
    addr = kit.address(c)
    n1 = await hk.FakeAgent(addr).start(hk.hello("n1", "b1", "k1", host_ip="198.18.0.51"))
    # a fake agent announces an address outside the allow-list, and claims a wider allow-list
    claims = common_pb2.CapabilityReport(units=[common_pb2.UnitReport(
        name="cluster", ok=True, available=True, cluster=capabilities_pb2.ClusterDetail(
            allow_list=capabilities_pb2.ProbeAllowList(cidrs=[capabilities_pb2.AllowedCidr(cidr="203.0.113.0/24")])))])
    evil = await hk.FakeAgent(addr).start(hk.hello("evil", "b2", "k2", host_ip="203.0.113.7", capabilities=claims))
    try:
        await kit.until(lambda: {"n1", "evil"} <= set(c.state.sessions), what="both agents")
        await kit.until(lambda: any(m.WhichOneof("body") == "peers" and {p.node for p in m.peers.peers} == {"n1", "evil"}
                                    for m in n1.replies), what="n1's peer table naming evil")
        table = [m.peers for m in n1.replies if m.WhichOneof("body") == "peers"][-1]
        assert {p.node: p.host_ip for p in table.peers} == {"n1": "198.18.0.51", "evil": ""}
        code, details = await _probe(addr, kind="rtt", source_node="n1", target_node="evil")
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "host address 203.0.113.7 of node evil was announced by its agent" in details
        for target in ("203.0.113.7", "203.0.113.9"):
            code, details = await _probe(addr, kind="rtt", source_node="n1", target_address=target)
            assert code == grpc.StatusCode.PERMISSION_DENIED, target
            assert "neither a known agent nor inside the allow-list (198.18.0.0/15)" in details
        assert not n1.commands()  # nothing reached the source agent
    finally:
        await n1.close()
        await evil.close()
        await c.stop()


@pytest.mark.parametrize("address", ["fd00:ec2::254", "100.100.100.200", "fd20:ce::254"])
async def test_a_metadata_address_is_refused_in_a_hello(tmp_path: Path, address: str) -> None:
    c = await kit.start_collector(tmp_path)
    try:
        for field in ("host_ip", "pod_ip"):
            a = await hk.FakeAgent(kit.address(c)).start(hk.hello("x", "b", "k", **{field: address}))
            code, details = await a.status()
            await a.close()
            assert code == grpc.StatusCode.PERMISSION_DENIED, field
            assert "cloud metadata" in details
    finally:
        await c.stop()


@pytest.mark.parametrize("resolver", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "10.9.9.9"])
async def test_the_dns_resolver_is_checked_like_a_target(tmp_path: Path, resolver: str) -> None:
    c = await kit.start_collector(tmp_path)
    n1 = await hk.FakeAgent(kit.address(c)).start(hk.hello("n1", "b1", "k1", host_ip="198.18.0.51"))
    try:
        await kit.until(lambda: "n1" in c.state.sessions, what="n1")
        code, details = await _probe(kit.address(c), kind="dns", source_node="n1", params={"resolver": resolver})
        assert code == grpc.StatusCode.PERMISSION_DENIED, details
        assert resolver in details
        assert not n1.commands()
    finally:
        await n1.close()
        await c.stop()


def _node(name: str, ip: str, pod_cidr: str = "") -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
            "spec": {"podCIDRs": [pod_cidr]} if pod_cidr else {}}


async def test_in_kubernetes_a_node_vouches_for_its_own_addresses_only() -> None:
    nodes = [_node("n1", "10.0.1.5", "10.244.1.0/24"), _node("n2", "10.0.2.5")]
    pods = [{"spec": {"nodeName": "n2"}, "status": {"podIP": "10.0.2.77"}}]
    changes: list[bool] = []
    trust = TargetTrust("198.18.0.0/15", lambda: (nodes, pods), on_change=lambda: changes.append(True))
    await trust.refresh()
    assert changes == [True]
    assert per_node(nodes, pods)["n2"] == [ipaddress.ip_network("10.0.2.5/32"), ipaddress.ip_network("10.0.2.77/32")]
    assert trust.vouched("n1", "10.0.1.5")
    assert trust.vouched("n1", "10.244.1.9")
    assert trust.vouched("n2", "10.0.2.77")
    assert not trust.vouched("n2", "10.0.1.5")       # another node's address
    assert not trust.vouched("n3", "10.0.1.5")       # a node the API does not know
    assert not trust.vouched("n1", "203.0.113.7")
    assert not trust.vouched("n1", "169.254.169.254")
    assert trust.vouched("n9", "198.18.0.9")          # the configured allow-list, for anyone
    assert "10.244.1.0/24" in trust.allow_spec()
