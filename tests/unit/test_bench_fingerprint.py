"""A run's fingerprint from the agents' capability reports: the lab says so, Kubernetes facts pass
through, nodes that disagree are shown as mixed, and the census gives NAT rule counts."""

from __future__ import annotations

from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.api.v1 import cluster_pb2, common_pb2
from cniscope.collector.runs.run_fingerprint import census_nat_rules, derive, is_lab


def node(host: str, pod: str, fp: cap.DataPlaneFingerprint, census: cap.IptablesDetail | None = None,
         instance: str = "", kernel: str = "6.18.0") -> cluster_pb2.NodeState:
    rep = common_pb2.CapabilityReport(kernel=kernel)
    cl = cap.ClusterDetail(fingerprint=fp)
    if instance:
        cl.node.instance_type = instance
    rep.units.add(name="cluster", ok=True, available=True, cluster=cl)
    if census is not None:
        rep.units.add(name="iptables", ok=True, available=True, iptables=census)
    rep.items.add(name="bbr", state=common_pb2.READINESS_READY)
    rep.items.add(name="xdp", state=common_pb2.READINESS_NOT_READY, reason="no native XDP")
    return cluster_pb2.NodeState(node="n", host_ip=host, pod_ip=pod, capabilities=rep)


LAB_FP = cap.DataPlaneFingerprint(cni="none", kube_proxy="none", routing="unknown", ipam="unknown", source="node")
EMPTY_CENSUS = cap.IptablesDetail(iptables_nft=cap.IptablesBackend(ran=True),
                                  iptables_legacy=cap.IptablesBackend(ran=True), kube_proxy=cap.KubeProxy(mode="none"))


def test_lab_fingerprints_itself_honestly() -> None:
    fp = derive({"node1": node("198.18.0.11", "198.19.1.11", LAB_FP, EMPTY_CENSUS),
                 "node2": node("198.18.0.12", "198.19.2.11", LAB_FP, EMPTY_CENSUS)})
    assert fp["environment"] == "lab: netns, iptables-nft"
    assert fp["node_type"] == "lab"
    assert fp["cni"] == "none"
    assert fp["nodes"] == "2"
    assert fp["kernel"] == "6.18.0"
    assert fp["kernel_ready"] == "bbr"


def test_kubernetes_fingerprint_passes_through() -> None:
    k8s = cap.DataPlaneFingerprint(cni="cilium", cni_version="1.16.5", kube_proxy="ebpf", routing="native",
                                   ipam="eni", tuning=["bandwidth-manager", "bbr"], source="kubernetes")
    fp = derive({"a": node("10.0.1.5", "10.0.1.77", k8s, instance="m6i.xlarge")})
    assert fp["cni"] == "cilium 1.16.5"
    assert fp["kube_proxy"] == "ebpf"
    assert fp["tuning"] == "bandwidth-manager, bbr"
    assert fp["node_type"] == "m6i.xlarge"
    assert fp["environment"] == "kubernetes"


def test_disagreeing_nodes_are_mixed() -> None:
    fp = derive({"a": node("10.0.0.1", "", LAB_FP, kernel="6.1"), "b": node("10.0.0.2", "", LAB_FP, kernel="6.8")})
    assert fp["kernel"] == "mixed: a=6.1; b=6.8"


def test_lab_detection_by_addresses() -> None:
    assert is_lab(cluster_pb2.NodeState(host_ip="198.18.0.11", pod_ip="198.19.1.11"))
    assert not is_lab(cluster_pb2.NodeState(host_ip="10.0.0.1", pod_ip="10.0.9.1"))
    assert not is_lab(cluster_pb2.NodeState(host_ip="not-an-ip"))


def test_census_rules() -> None:
    kp = cap.IptablesDetail(kube_proxy=cap.KubeProxy(mode="iptables", backend="iptables-nft", nat_rules=1048))
    assert census_nat_rules(node("1.1.1.1", "", LAB_FP, kp).capabilities) == (1048.0, "iptables-nft")
    assert census_nat_rules(node("1.1.1.1", "", LAB_FP, EMPTY_CENSUS).capabilities)[0] == 0.0
    both = cap.IptablesDetail(iptables_nft=cap.IptablesBackend(ran=True, tables={"nat": cap.IptablesTable(rules=5)}),
                              iptables_legacy=cap.IptablesBackend(ran=True, tables={"nat": cap.IptablesTable(rules=9)}))
    assert census_nat_rules(node("1.1.1.1", "", LAB_FP, both).capabilities) == (9.0, "iptables-legacy")
    assert census_nat_rules(node("1.1.1.1", "", LAB_FP).capabilities) == (None, "")


def test_a_unit_carrying_another_units_findings_is_not_read() -> None:
    """The census is read from the ``iptables`` case only: findings filed under another case are not
    taken for it."""
    rep = common_pb2.CapabilityReport()
    rep.units.add(name="iptables", ok=True, available=True, kernel=cap.KernelDetail(release="6.18"))
    assert census_nat_rules(rep) == (None, "")
