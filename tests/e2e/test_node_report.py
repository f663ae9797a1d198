"""The node report locally, and the same units arriving at the collector from lab agents."""

from __future__ import annotations

import asyncio
import json

import pytest

from cniscope.agent.inspectors import iptables
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from cniscope.cli import main
from cniscope.cli.capreport import render_matrix, render_node
from cniscope.core import grpcutil
from cniscope.lab import kubeproxy as kp
from cniscope.lab.lab import Lab


def _report() -> common_pb2.CapabilityReport:
    r = common_pb2.CapabilityReport(kernel="6.18")
    r.items.add(name="bandwidth_manager", state=common_pb2.READINESS_NOT_READY, reason="fq qdisc missing")
    r.items.add(name="bbr", state=common_pb2.READINESS_READY, reason="ok | fine")
    d = cap.IptablesDetail(
        iptables_nft=cap.IptablesBackend(ran=True, rules=48, tables={"nat": cap.IptablesTable(rules=48)}),
        kube_proxy=cap.KubeProxy(mode="iptables", backend="iptables-nft", services_rules=5, svc_chains=4,
                                 sep_chains=12, nat_rules=48))
    r.units.add(name="iptables", ok=True, available=True, duration_seconds=0.01, iptables=d,
                summary=iptables.summarize(d))
    r.units.add(name="cni_footprint", ok=True, available=False, error="unavailable: no CNI agent process",
                summary="unavailable: no CNI agent process")
    r.units.add(name="bpf", ok=False, available=True, error="OSError: boom", summary="OSError: boom")
    return r


def test_render_node_formats() -> None:
    r = _report()
    d = json.loads(render_node(r, "json"))
    assert [u["status"] for u in d["units"]] == ["ok", "unavailable", "failed"]
    assert d["items"][0] == {"name": "bandwidth_manager", "state": "not ready", "reason": "fq qdisc missing"}
    assert d["units"][0]["detail"]["kube_proxy"]["nat_rules"] == 48   # the typed findings, by field name
    assert d["units"][0]["detail"]["iptables_nft"]["tables"]["nat"]["rules"] == 48
    assert d["units"][2]["detail"] == {}
    text = render_node(r, "table")
    assert "iptables-nft 48 NAT rules, kube-proxy iptables (4 services, 12 endpoints)" in text
    assert "unavailable: no CNI agent process" in text
    md = render_node(r, "markdown")
    assert "| bbr | ready | ok \\| fine |" in md


def test_render_matrix() -> None:
    a = cluster_pb2.NodeState(node="node1")
    a.capabilities.CopyFrom(_report())
    b = cluster_pb2.NodeState(node="node2")
    out = render_matrix([a, b], "table")
    assert "bandwidth_manager" in out
    assert "no report" in out
    assert "bandwidth_manager on node1: fq qdisc missing" in out
    j = json.loads(render_matrix([a, b], "json"))
    assert j["nodes"]["node2"] is None
    assert j["nodes"]["node1"]["items"]["bbr"]["state"] == "ready"


@pytest.mark.netns
def test_node_report_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["node", "report", "-o", "json", "--only", "iptables", "--only", "readiness"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [u["name"] for u in d["units"]] == ["iptables", "readiness"]
    names = {i["name"] for i in d["items"]}
    assert {"bandwidth_manager", "bbr", "kprobes", "netkit", "kube_proxy_replacement"} <= names


def test_node_report_unknown_unit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "report", "--only", "nope"]) == 4
    assert "unknown unit" in capsys.readouterr().err


async def _get_node(address: str, node: str) -> cluster_pb2.NodeState:
    async with grpcutil.insecure_channel(address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        return await stub.GetNode(cluster_pb2.GetNodeRequest(node=node), timeout=5)


@pytest.mark.netns
def test_units_reach_the_collector(lab: Lab, tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    """node1 carries kube-proxy rules before its agent starts; GetNode shows them, and the matrix
    lists every node with the readiness items."""
    nodes = lab.nodes()
    loaded = kp.load(nodes[0].netns, 4, "iptables-nft", endpoints=[n.pod_ip for n in nodes])
    try:
        lab.start_cluster(db=tmp_path / "c.db", sample_interval=0.5)  # type: ignore[operator]
        from conftest import wait_connected  # type: ignore[import-not-found]

        wait_connected(lab, 3)
        st = asyncio.run(_get_node(lab.local_collector, "node1"))
        units = {u.name: u for u in st.capabilities.units}
        assert units["iptables"].WhichOneof("detail") == "iptables"   # typed on the wire
        ipt = units["iptables"].iptables
        assert ipt.iptables_nft.tables["nat"].rules == loaded.nat_rules == 48
        assert ipt.kube_proxy.mode == "iptables"
        assert "iptables-nft 48 NAT rules" in units["iptables"].summary
        assert "kube-proxy iptables (4 services, " in units["iptables"].summary
        assert units["readiness"].readiness.config_source
        assert "bandwidth_manager" in {i.name for i in st.capabilities.items}
        assert units["kernel"].summary.startswith("kernel ")
        assert all(u.summary for u in st.capabilities.units), [u.name for u in st.capabilities.units]
        other = asyncio.run(_get_node(lab.local_collector, "node2"))
        assert {u.name: u for u in other.capabilities.units}["iptables"].iptables.kube_proxy.mode == "none"

        assert main(["report", "capabilities", "-o", "json", "--collector", lab.local_collector]) == 0
        m = json.loads(capsys.readouterr().out)
        assert sorted(m["nodes"]) == ["node1", "node2", "node3"]
        assert all(n["items"]["kprobes"]["state"] in ("ready", "not ready") for n in m["nodes"].values())
        assert main(["report", "capabilities", "--collector", lab.local_collector]) == 0
        assert "NODE1" in capsys.readouterr().out
    finally:
        kp.flush(nodes[0].netns, "iptables-nft")


def test_xdp_test_missing_from_build(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cniscope.agent.xdp_trial", None)  # import fails as in a slim build
    assert main(["node", "xdp-test", "lo"]) == 3
    assert "not available in this build" in capsys.readouterr().err


@pytest.mark.bpf
def test_xdp_test_on_loopback_reports_the_kernel_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    """lo has no native XDP: driver mode is refused with the kernel's words and nothing stays attached."""
    assert main(["node", "xdp-test", "lo", "--mode", "driver", "-o", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["results"]["native"]["ok"] is False
    assert d["agrees"] is True
    assert d["left_attached"] == "none"
