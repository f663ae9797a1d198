"""The install's decisions about where and how the pods run, checked on the rendered manifests:
which nodes the DaemonSets land on (evaluated against recorded Node objects: an EKS worker, a Fargate
node, hybrid and virtual-kubelet nodes, a Windows node), AppArmor and SELinux, the admission policy
fencing the collector's Services, the collector's grace period against its cleanup, no hard-coded
Service CIDR, and the iptables lock nobody takes."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cniscope.collector.runs import service_scaler
from tests import caps
from tests.k8s.apiserver import load_fixture
from tests.kustomize import Doc, render

ROOT = Path(__file__).resolve().parents[2]
DS = ROOT / "daemonset"
COLLECTOR_SA = "system:serviceaccount:cniscope:cniscope-collector"


def docs(overlay: str = "base") -> list[Doc]:
    return render(DS / overlay)


def workload(name: str, overlay: str = "base") -> Doc:
    return next(d for d in docs(overlay) if d["kind"] in ("DaemonSet", "Deployment") and d["metadata"]["name"] == name)


def _term_matches(term: dict[str, Any], labels: dict[str, str]) -> bool:
    for e in term.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def schedulable(w: Doc, node: dict[str, Any]) -> bool:
    """The scheduler's NodeAffinity + nodeSelector filter (taints aside: the DaemonSets tolerate all)."""
    spec = w["spec"]["template"]["spec"]
    labels = node["metadata"].get("labels", {})
    if any(labels.get(k) != v for k, v in spec.get("nodeSelector", {}).items()):
        return False
    req = spec.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if req is None:
        return True
    return any(_term_matches(t, labels) for t in req["nodeSelectorTerms"])


def relabelled(node: dict[str, Any], **labels: str) -> dict[str, Any]:
    n = copy.deepcopy(node)
    n["metadata"]["labels"].update(labels)
    return n


EKS_WORKER = load_fixture("node_m6i.json")["object"]
FARGATE = load_fixture("node_fargate.json")["object"]
NODES = {
    "eks-worker": (EKS_WORKER, True),
    "auto-mode": (relabelled(EKS_WORKER, **{"eks.amazonaws.com/compute-type": "auto"}), True),
    "fargate": (FARGATE, False),
    "hybrid": (relabelled(EKS_WORKER, **{"eks.amazonaws.com/compute-type": "hybrid"}), False),
    "virtual-kubelet": (relabelled(EKS_WORKER, type="virtual-kubelet"), False),
    "windows": (relabelled(EKS_WORKER, **{"kubernetes.io/os": "windows"}), False),
}


@pytest.mark.parametrize("name", ["cniscope-agent", "cniscope-probe"])
@pytest.mark.parametrize("node", sorted(NODES))
def test_daemonsets_land_on_linux_nodes_with_a_kernel_of_their_own(name: str, node: str) -> None:
    obj, expected = NODES[node]
    assert schedulable(workload(name), obj) is expected


def test_the_collector_runs_on_linux() -> None:
    assert schedulable(workload("cniscope-collector"), EKS_WORKER)
    assert not schedulable(workload("cniscope-collector"), NODES["windows"][0])


def test_the_agent_alone_is_apparmor_unconfined_and_says_why() -> None:
    for name in ("cniscope-agent", "cniscope-probe", "cniscope-collector"):
        for c in workload(name)["spec"]["template"]["spec"]["containers"]:
            profile = c["securityContext"].get("appArmorProfile")
            assert profile == ({"type": "Unconfined"} if name == "cniscope-agent" else None), name
    text = (DS / "base" / "agent-daemonset.yaml").read_text()
    reason = text.split("appArmorProfile:", 1)[0].rsplit("seccompProfile:", 1)[1]
    assert "bpf()" in reason
    assert "perf_event_open" in reason


def test_the_selinux_overlay_makes_only_the_agent_spc_t() -> None:
    base = workload("cniscope-agent")["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert "seLinuxOptions" not in base
    agent = workload("cniscope-agent", "overlays/selinux")["spec"]["template"]["spec"]["containers"][0]
    assert agent["securityContext"]["seLinuxOptions"] == {"level": "s0", "type": "spc_t"}
    assert agent["securityContext"]["capabilities"] == base["capabilities"]
    for name in ("cniscope-probe", "cniscope-collector"):
        c = workload(name, "overlays/selinux")["spec"]["template"]["spec"]["containers"][0]
        assert "seLinuxOptions" not in c["securityContext"]


def test_an_admission_policy_fences_the_collectors_services() -> None:
    rendered = docs()
    policy = next(d for d in rendered if d["kind"] == "ValidatingAdmissionPolicy")
    binding = next(d for d in rendered if d["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    rule = spec["matchConstraints"]["resourceRules"][0]
    assert rule["resources"] == ["services"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE", "DELETE"}
    assert [c["expression"] for c in spec["matchConditions"]] == [f"request.userInfo.username == '{COLLECTOR_SA}'"]
    rules = " ".join(v["expression"] for v in spec["validations"])
    assert "object.spec.type == 'ClusterIP'" in rules
    assert f"'{service_scaler.MANAGED_BY}'" in rules
    assert "== 'cniscope'" in rules
    assert "request.namespace == 'cniscope-probe'" in rules
    sa = next(d for d in rendered if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "cniscope-collector")
    assert COLLECTOR_SA == f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
    # what the collector sends is what the policy admits
    from kubernetes import client

    body = service_scaler.ServiceScaler("cniscope-probe", client.ApiClient()).service_body(0, run="r1")
    assert body["spec"]["type"] == "ClusterIP"
    assert body["metadata"]["labels"][service_scaler.MANAGED_BY] == "cniscope"
    assert "externalIPs" not in body["spec"]


def test_the_collector_outlives_its_service_cleanup() -> None:
    grace = workload("cniscope-collector")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= service_scaler.CLEANUP_SECONDS + 10


@pytest.mark.parametrize("overlay", ["base", "overlays/persistent", "overlays/minimal", "overlays/auth",
                                     "overlays/selinux"])
def test_no_overlay_hard_codes_an_allow_list(overlay: str) -> None:
    for d in docs(overlay):
        if d["kind"] in ("DaemonSet", "Deployment"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert "CNISCOPE_ALLOW_CIDRS" not in {e["name"] for e in c.get("env", [])}
    for path in DS.rglob("*.yaml"):
        assert "10.100.0.0/16" not in path.read_text(), path


@pytest.mark.parametrize("tool", ["iptables-legacy-save", "iptables-nft-save"])
def test_the_save_tools_never_take_the_xtables_lock(tool: str) -> None:
    """Why the agent has no /run/xtables.lock mount: the census tools do not open it."""
    out = subprocess.run([caps.tool("strace"), "-f", "-e", "trace=openat,open,flock", caps.tool(tool)], capture_output=True,
                         text=True, timeout=30)
    assert "openat" in out.stderr                       # strace did trace it
    assert "xtables.lock" not in out.stderr
    census = (ROOT / "agent" / "cniscope" / "agent" / "inspectors" / "iptables.py").read_text()
    assert f'"{tool}"' in census
