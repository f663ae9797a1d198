"""RBAC exactly as wide as the code: the agent's and the collector's own Kubernetes calls are run
against the API stand-in over recorded clusters, every request it receives is turned into the
attributes the RBAC authorizer checks (verb, API group, resource, namespace, name), and the install's
Roles and ClusterRoles are evaluated for each, the way the authorizer does. Nothing the code does may
be refused, and every verb (and every resourceName) granted must be used by some call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cniscope.agent import cluster_api
from cniscope.collector.kube_auth import kubernetes_verifier
from cniscope.collector.runs.service_scaler import ServiceScaler
from cniscope.collector.target_trust import kubernetes_fetch
from cniscope.core import kubeapi
from cniscope.core.errors import CniscopeError
from tests.k8s.apiserver import FakeApiServer, Request
from tests.kustomize import Doc, render

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
NODE = "ip-10-0-12-34.eu-west-1.compute.internal"
CM = "/api/v1/namespaces/kube-system/configmaps/"


@dataclass(frozen=True)
class Attrs:
    verb: str
    group: str
    resource: str
    namespace: str
    name: str


def attributes(r: Request) -> Attrs:
    """What the API server's request-info resolver makes of a request."""
    parts = r.path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    namespace = ""
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], (rest[1] if len(rest) > 1 else "")
    watch = r.query.get("watch", [""])[0] in ("true", "1")
    verb = {"POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}.get(
        r.method, "get" if name else ("watch" if watch else "list"))
    return Attrs(verb, group, resource, namespace, name)


def grants(sa: str, rendered: list[Doc]) -> list[tuple[str, str, dict[str, Any]]]:
    """(role id, namespace it applies in or "*" for cluster-wide, rule) for every rule bound to ``sa``."""
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in rendered
             if d["kind"] in ("Role", "ClusterRole")}
    out = []
    for b in rendered:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and f"{s['namespace']}:{s['name']}" == sa for s in b["subjects"]):
            continue
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace", "") if b["kind"] == "RoleBinding" else "*"
        role = roles[(ref["kind"], ns if ref["kind"] == "Role" else "", ref["name"])]
        out += [(f"{ref['kind']}/{ref['name']}", ns, rule) for rule in role["rules"]]
    return out


def allowed_by(a: Attrs, granted: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, int, str]]:
    hits = []
    for role, ns, rule in granted:
        if ns != "*" and ns != a.namespace:
            continue
        if a.verb not in rule["verbs"] or a.group not in rule["apiGroups"] or a.resource not in rule["resources"]:
            continue
        names = rule.get("resourceNames")
        if names and a.name not in names:
            continue
        hits.append((role, id(rule), a.name if names else ""))
    return hits


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    srv = FakeApiServer().start()
    yield srv
    srv.stop()


def run_agent_calls(api: FakeApiServer, tmp_path: Path, fixtures: list[str]) -> None:
    for f in fixtures:
        api.load(f)
    api.objects[f"/api/v1/nodes/{NODE}"] = api.objects["/api/v1/nodes"]["items"][0]
    view = cluster_api.ClusterView.connect("on", {"KUBECONFIG": str(api.kubeconfig(tmp_path / "kc"))})
    assert view is not None
    view.node(NODE)
    view.fingerprint()
    view.cidr_objects()
    view.probe_pod(NODE, "cniscope-probe", "app.kubernetes.io/name=cniscope-probe", timeout=1)


AGENT_CLUSTERS = [
    ["cluster_eks_172_20.json", "scenario_a.json"],            # EKS: kube-proxy-config, aws-node, no ServiceCIDR API
    ["cluster_eks_172_20.json", "scenario_e.json"],            # Cilium: cilium-config and its DaemonSet
    ["cluster_kubeadm_133.json"],                              # kubeadm: ServiceCIDR API, kube-proxy ConfigMap
]


def test_the_agents_calls_are_exactly_its_grants(tmp_path: Path) -> None:
    granted = grants("cniscope:cniscope-agent", render(ROOT / "daemonset" / "base"))
    used: set[tuple[str, int, str]] = set()
    seen: set[Attrs] = set()
    for i, fixtures in enumerate(AGENT_CLUSTERS):
        srv = FakeApiServer().start()
        try:
            if "cluster_kubeadm_133.json" in fixtures:
                srv.load("cluster_kubeadm_133.json")
                del srv.objects["/apis/networking.k8s.io/v1/servicecidrs"]   # a 1.31 kubeadm: kubeadm-config
                fixtures = []
            (tmp_path / str(i)).mkdir()
            run_agent_calls(srv, tmp_path / str(i), fixtures)
            requests = list(srv.requests)
        finally:
            srv.stop()
        for r in requests:
            a = attributes(r)
            seen.add(a)
            hits = allowed_by(a, granted)
            assert hits, f"the agent's {a} is refused by the install's RBAC"
            used |= set(hits)
    assert Attrs("watch", "", "pods", "cniscope-probe", "") in seen
    assert Attrs("list", "networking.k8s.io", "servicecidrs", "", "") in seen
    unused = []
    for role, _ns, rule in granted:
        for verb in rule["verbs"]:
            names = rule.get("resourceNames") or [""]
            for name in names:
                if not any(u[1] == id(rule) and u[2] == name for u in used) or not any(
                        a.verb == verb and a.resource in rule["resources"] and (not name or a.name == name)
                        for a in seen):
                    unused.append(f"{role}: {verb} {rule['resources']} {name}".strip())
    assert unused == [], f"granted but never used by the agent: {unused}"


def test_the_collectors_calls_are_exactly_its_grants(api: FakeApiServer, tmp_path: Path) -> None:
    granted = grants("cniscope:cniscope-collector", render(ROOT / "daemonset" / "base"))
    scaler = ServiceScaler("cniscope-probe", kubeapi.api_client({"KUBECONFIG": str(api.kubeconfig(tmp_path / "kc"))}))
    api.endpointslices.append({"metadata": {"namespace": "cniscope-probe", "name": "s1",
                                            "labels": {"kubernetes.io/service-name": "cniscope-scale-00001"}},
                               "endpoints": [{"addresses": ["198.18.0.10"], "conditions": {"ready": True}}]})
    names = scaler.scale_to(2, run="r1")
    scaler.wait_ready(names[-1], timeout=5)
    scaler.cluster_ip(names[-1])
    scaler.scale_to(1)
    scaler.delete_all()
    env = {"KUBECONFIG": str(api.kubeconfig(tmp_path / "kc"))}
    kubernetes_fetch("cniscope-probe", "app.kubernetes.io/name=cniscope-probe", env)()  # targets it vouches for
    verifier = kubernetes_verifier("cniscope", "system:serviceaccount:cniscope:cniscope-agent", env)
    with contextlib.suppress(CniscopeError):  # the stand-in reviews nothing: the calls are what counts here
        verifier.review("a-token", ["cniscope"])
    verifier.access({"username": "alice"}, "view")
    verifier.pod_node("cniscope", "cniscope-agent-x", "uid")
    seen = {attributes(r) for r in api.requests}
    assert Attrs("list", "", "nodes", "", "") in seen
    assert Attrs("create", "authentication.k8s.io", "tokenreviews", "", "") in seen
    used = set()
    for a in seen:
        hits = allowed_by(a, granted)
        assert hits, f"the collector's {a} is refused by the install's RBAC"
        assert a.namespace in ("cniscope-probe", "cniscope") or a.namespace == "" and a.resource in (
            "nodes", "tokenreviews", "subjectaccessreviews")
        used |= {(h[1], a.verb) for h in hits}
    unused = [f"{role}: {verb} {rule['resources']}" for role, _ns, rule in granted for verb in rule["verbs"]
              if (id(rule), verb) not in used]
    assert unused == [], f"granted but never used by the collector: {unused}"


def test_the_check_refuses_what_the_rbac_does_not_grant() -> None:
    granted = grants("cniscope:cniscope-agent", render(ROOT / "daemonset" / "base"))
    assert allowed_by(Attrs("list", "", "pods", "kube-system", ""), granted) == []
    assert allowed_by(Attrs("get", "", "configmaps", "kube-system", "coredns"), granted) == []
    assert allowed_by(Attrs("list", "", "configmaps", "kube-system", ""), granted) == []  # names never list
    assert allowed_by(Attrs("get", "", "configmaps", "kube-system", "cilium-config"), granted)
