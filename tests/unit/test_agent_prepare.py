"""The agent's own checks before any packet leaves: caps, allow-list, paths, dns resolver."""

from __future__ import annotations

import pytest

from cniscope.agent.node_agent import NodeAgent
from cniscope.api.v1 import common_pb2
from cniscope.core.config import AgentConfig
from cniscope.core.errors import CniscopeError, ForbiddenTarget, ValidationError


@pytest.fixture
def agent() -> NodeAgent:
    a = NodeAgent(AgentConfig(node="node1", host_ip="198.18.0.11", pod_ip="198.19.1.11",
                          pod_netns="/run/netns/none", token_file=""))
    a.peers["node2"] = common_pb2.Peer(node="node2", host_ip="198.18.0.12", pod_ip="198.19.2.11")
    return a


def req(kind: str, **kw: object) -> common_pb2.ProbeRequest:
    params = kw.pop("params", {})
    return common_pb2.ProbeRequest(kind=kind, probe_id="p1", source_node="node1", params=params, **kw)  # type: ignore[arg-type]


def test_cap_enforced_by_the_agent_too(agent: NodeAgent) -> None:
    with pytest.raises(ValidationError, match="above the cap"):
        agent.probes.prepare(req("tcp", target_node="node2", params={"duration": "600"}))
    with pytest.raises(ValidationError, match="streams"):
        agent.probes.prepare(req("udp", target_node="node2", params={"streams": "64"}))


def test_paths_pick_the_right_addresses_and_namespace(agent: NodeAgent) -> None:
    host = agent.probes.prepare(req("tcp", target_node="node2", path="host", target_port=5333))
    assert (host.target_address, host.netns, host.iperf_port) == ("198.18.0.12", "", 5333)
    pod = agent.probes.prepare(req("connect", target_node="node2", path="pod"))
    assert (pod.target_address, pod.netns, pod.target_port) == ("198.19.2.11", "/run/netns/none", 7411)


def test_service_path_needs_a_cluster_ip(agent: NodeAgent) -> None:
    with pytest.raises(CniscopeError, match="ClusterIP"):
        agent.probes.prepare(req("connect", target_node="node2", path="service"))
    svc = agent.probes.prepare(req("connect", target_node="node2", path="service", target_address="198.18.64.10"))
    assert svc.target_address == "198.18.64.10"
    assert svc.netns == "/run/netns/none"


@pytest.mark.parametrize("target", ["10.0.0.1", "169.254.169.254", "127.0.0.1", "0xa9fea9fe"])
def test_targets_outside_the_allow_list_refused(agent: NodeAgent, target: str) -> None:
    with pytest.raises(ForbiddenTarget):
        agent.probes.prepare(req("connect", target_address=target))


def test_dns_resolver_is_a_target_too(agent: NodeAgent) -> None:
    with pytest.raises(ForbiddenTarget):
        agent.probes.prepare(req("dns", params={"resolver": "8.8.8.8"}))
    ok = agent.probes.prepare(req("dns", params={"resolver": "198.18.0.3"}))
    assert ok.target_address == "198.18.0.3"
    default = agent.probes.prepare(req("dns"))  # resolv.conf of the source, read by the probe
    assert default.target_address == ""


def test_pod_path_without_a_probe_pod_is_refused() -> None:
    a = NodeAgent(AgentConfig(node="node1", host_ip="198.18.0.11", token_file=""))
    a.peers["node2"] = common_pb2.Peer(node="node2", host_ip="198.18.0.12", pod_ip="198.19.2.11")
    with pytest.raises(CniscopeError, match="no probe pod"):
        a.probes.prepare(req("rtt", target_node="node2", path="pod"))
