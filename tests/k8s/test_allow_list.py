"""The probe allow-list discovered from the cluster (node InternalIPs, pod CIDRs, the Service CIDR)
against the API stand-in serving recorded clusters: an EKS cluster on 172.20.0.0/16 without the
ServiceCIDR API, a kubeadm 1.33 cluster with it; a configured CNISCOPE_ALLOW_CIDRS wins without a
single API call; refusals and an unreachable API keep the agent running on what it has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cniscope.agent import cluster_api
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.api.v1 import common_pb2
from cniscope.core import cluster_cidrs, netpolicy
from cniscope.core.config import AgentConfig
from cniscope.core.errors import ForbiddenTarget
from tests.k8s.apiserver import FakeApiServer

pytestmark = pytest.mark.k8s

SVC_V1 = "/apis/networking.k8s.io/v1/servicecidrs"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    srv = FakeApiServer().start()
    yield srv
    srv.stop()


def resolve(api: FakeApiServer, tmp_path: Path, env: dict[str, str] | None = None) -> tuple[AgentConfig, cluster_cidrs.AllowList]:
    view = cluster_api.ClusterView.connect("on", {"KUBECONFIG": str(api.kubeconfig(tmp_path / "kc"))})
    cfg = AgentConfig(node="n1")
    allow = cluster_api.resolve_allow_list(cfg, view, env or {})
    return cfg, allow


def test_an_eks_cluster_on_172_20_allows_its_service_range(api: FakeApiServer, tmp_path: Path) -> None:
    api.load("cluster_eks_172_20.json")
    cfg, allow = resolve(api, tmp_path)
    assert allow.origin == "discovered"
    assert allow.role("services") == ["172.20.0.0/16"]
    src = next(c.source for c in allow.cidrs if c.role == "services")
    assert "ClusterIP 172.20.0.1" in src
    assert "EKS" in src
    assert allow.role("nodes") == ["10.0.12.34/32", "10.0.45.6/32", "10.0.77.8/32"]
    assert allow.role("pods") == []
    assert any("aws-vpc-cni" in n for n in allow.notes)             # pods take VPC addresses
    assert cfg.allow_cidrs == allow.spec()
    assert netpolicy.check_target("172.20.31.7", [], cfg.allow_cidrs) == "172.20.31.7"
    with pytest.raises(ForbiddenTarget, match="allow-list"):
        netpolicy.check_target("10.100.0.10", [], cfg.allow_cidrs)  # the old hard-coded range is not this cluster's
    asked = {r.path for r in api.requests}
    assert SVC_V1 in asked                                          # asked the ServiceCIDR API first (404 here)
    assert "/api/v1/namespaces/kube-system/configmaps/kubeadm-config" in asked


def test_a_kubeadm_133_cluster_reads_the_service_cidr_api(api: FakeApiServer, tmp_path: Path) -> None:
    api.load("cluster_kubeadm_133.json")
    _, allow = resolve(api, tmp_path)
    services = [c for c in allow.cidrs if c.role == "services"]
    assert [(c.cidr, c.source) for c in services] == [("10.96.0.0/12", "ServiceCIDR kubernetes (networking.k8s.io/v1)")]
    assert allow.role("pods") == ["10.244.0.0/23", "10.244.2.0/24"]  # the nodes' podCIDRs, collapsed
    assert allow.role("nodes") == ["192.0.2.10/31", "192.0.2.12/32"]
    assert "/api/v1/namespaces/kube-system/configmaps/kubeadm-config" not in {r.path for r in api.requests}


def test_kubeadm_config_is_used_where_the_service_cidr_api_is_not_served(api: FakeApiServer, tmp_path: Path) -> None:
    api.load("cluster_kubeadm_133.json")
    del api.objects[SVC_V1]
    api.objects["/api/v1/namespaces/default/services/kubernetes"]["spec"].update(
        clusterIP="10.50.0.1", clusterIPs=["10.50.0.1"])
    _, allow = resolve(api, tmp_path)
    assert [(c.cidr, c.source) for c in allow.cidrs if c.role == "services"] == [
        ("10.96.0.0/12", "kube-system/kubeadm-config networking.serviceSubnet")]


def test_a_refused_read_is_a_note_and_the_next_source_answers(api: FakeApiServer, tmp_path: Path) -> None:
    api.load("cluster_kubeadm_133.json")
    api.forbidden.add(SVC_V1)
    api.forbidden.add("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
    _, allow = resolve(api, tmp_path)
    assert allow.role("services") == ["10.96.0.0/12"]               # from the kubernetes Service's 10.96.0.1
    assert "kubeadm default" in next(c.source for c in allow.cidrs if c.role == "services")
    assert any("403" in n and "servicecidrs" in n for n in allow.notes)


def test_an_unknown_service_range_is_a_stated_guess(api: FakeApiServer, tmp_path: Path) -> None:
    api.load("cluster_eks_172_20.json")
    api.objects["/api/v1/namespaces/default/services/kubernetes"]["spec"].update(
        clusterIP="10.50.0.1", clusterIPs=["10.50.0.1"])
    _, allow = resolve(api, tmp_path)
    assert allow.role("services") == ["10.50.0.0/16"]
    assert any("guessed as 10.50.0.0/16" in n and "CNISCOPE_ALLOW_CIDRS" in n for n in allow.notes)


def test_a_configured_list_wins_without_asking_the_api(api: FakeApiServer, tmp_path: Path) -> None:
    api.load("cluster_eks_172_20.json")
    cfg, allow = resolve(api, tmp_path, {"CNISCOPE_ALLOW_CIDRS": "10.100.0.0/16, 192.0.2.0/24"})
    assert allow.origin == "configured"
    assert cfg.allow_cidrs == "10.100.0.0/16,192.0.2.0/24"
    assert api.requests == []


def test_an_unreachable_api_keeps_the_default(tmp_path: Path) -> None:
    srv = FakeApiServer()
    kc = srv.kubeconfig(tmp_path / "kc")
    srv.httpd.server_close()
    view = cluster_api.ClusterView.connect("on", {"KUBECONFIG": str(kc)})
    cfg = AgentConfig(node="n1")
    allow = cluster_api.resolve_allow_list(cfg, view, {})
    assert allow.origin == "default"
    assert cfg.allow_cidrs == "198.18.0.0/15"


def report_with(cidrs: list[str]) -> common_pb2.CapabilityReport:
    unit = common_pb2.UnitReport(name="cluster", ok=True, available=True)
    unit.cluster.allow_list.CopyFrom(cap.ProbeAllowList(
        origin="discovered", cidrs=[cap.AllowedCidr(cidr=c, role="services", source="test") for c in cidrs]))
    return common_pb2.CapabilityReport(units=[unit])


def test_the_collector_admits_what_its_agents_enforce_unless_configured() -> None:
    reports = [report_with(["172.20.0.0/16"]), report_with(["172.20.0.0/16", "10.0.12.34/32"]),
               common_pb2.CapabilityReport()]
    merged = cluster_cidrs.with_reported("198.18.0.0/15", reports, env={})
    assert merged == "198.18.0.0/15,172.20.0.0/16,10.0.12.34/32"
    assert netpolicy.check_target("172.20.0.10", [], merged) == "172.20.0.10"
    only = cluster_cidrs.with_reported("10.100.0.0/16", reports, env={"CNISCOPE_ALLOW_CIDRS": "10.100.0.0/16"})
    assert only == "10.100.0.0/16"


def test_the_allow_list_travels_typed_in_the_cluster_unit(api: FakeApiServer, tmp_path: Path) -> None:
    api.load("cluster_eks_172_20.json")
    _, allow = resolve(api, tmp_path)
    msg = allow.to_proto()
    back = cap.ProbeAllowList.FromString(msg.SerializeToString())
    assert back.origin == "discovered"
    assert [(c.cidr, c.role) for c in back.cidrs if c.role == "services"] == [("172.20.0.0/16", "services")]
    assert list(back.notes) == list(allow.notes)


def test_the_cluster_unit_reports_the_allow_list_in_force(api: FakeApiServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from cniscope.agent.inspectors.cluster import inspect_cluster
    from cniscope.core.hostpaths import HostPaths

    api.load("cluster_eks_172_20.json")
    monkeypatch.delenv("CNISCOPE_ALLOW_CIDRS", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kc")))
    monkeypatch.setenv("CNISCOPE_NODE", "ip-10-0-12-34.eu-west-1.compute.internal")
    monkeypatch.setattr(cluster_api, "_ALLOW_LIST", None)
    before = inspect_cluster(HostPaths.from_env()).detail
    assert isinstance(before, cap.ClusterDetail)
    assert before.allow_list.origin == "default"                   # not resolved yet: the configured default
    resolve(api, tmp_path)
    after = inspect_cluster(HostPaths.from_env()).detail
    assert isinstance(after, cap.ClusterDetail)
    assert after.allow_list.origin == "discovered"
    assert "172.20.0.0/16" in [c.cidr for c in after.allow_list.cidrs]
