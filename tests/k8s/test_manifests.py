"""The kustomization under daemonset/ rendered as `kubectl apply -k` would send it, validated against
the Kubernetes 1.31 and 1.33 OpenAPI schemas (kubernetes-validate ships them; no network), and held to
the least-privilege policy: no privileged container, drop ALL, only documented capabilities,
read-only root filesystems and host mounts, seccomp, resource requests, Pod Security "restricted"
where it can be; Linux nodes only, never serverless or virtual ones; AppArmor and SELinux decided;
the collector's Services fenced by an admission policy."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from cniscope.core.config import AgentConfig, CollectorConfig, env_value
from tests.kustomize import Doc, render

ROOT = Path(__file__).resolve().parents[2]
DS = ROOT / "daemonset"
OVERLAYS = ["base", "overlays/persistent", "overlays/minimal", "overlays/auth", "overlays/selinux"]
K8S_VERSIONS = ["1.31.0", "1.33.0"]

# Every capability the agent may add, and what needs it (README "Kubernetes" documents the same list).
DOCUMENTED_CAPS = {"BPF", "PERFMON", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
WRITABLE_HOST_PATHS: set[str] = set()   # none: iptables-*-save never take /run/xtables.lock


def docs(overlay: str) -> list[Doc]:
    return render(DS / overlay)


def workloads(overlay: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs(overlay) if d["kind"] in ("DaemonSet", "Deployment")}


def pod_spec(w: Doc) -> dict[str, Any]:
    spec: dict[str, Any] = w["spec"]["template"]["spec"]
    return spec


def restricted_violations(w: Doc) -> list[str]:
    """Pod Security Standards, level "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards)."""
    spec = pod_spec(w)
    psc = spec.get("securityContext", {})
    out: list[str] = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"{key}: true")
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {v['name']} of type {sorted(kinds)}")
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            out.append(f"{c['name']}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: allowPrivilegeEscalation not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"{c['name']}: does not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{c['name']}: adds {caps['add']}")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            out.append(f"{c['name']}: runAsNonRoot not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{c['name']}: runAsUser 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{c['name']}: seccomp {seccomp}")
        for p in c.get("ports", []):
            if p.get("hostPort"):
                out.append(f"{c['name']}: hostPort {p['hostPort']}")
    return out


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_validates_against_the_kubernetes_schema(overlay: str, version: str) -> None:
    rendered = docs(overlay)
    assert len(rendered) >= 15
    for d in rendered:
        kubernetes_validate.validate(d, version, strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    ds = copy.deepcopy(workloads("base")["cniscope-agent"])
    pod_spec(ds)["containers"][0]["securityContext"]["capabilites"] = {"add": ["SYS_ADMIN"]}
    with pytest.raises(kubernetes_validate.ValidationError, match="capabilites"):
        kubernetes_validate.validate(ds, "1.31.0", strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_container_is_privileged_and_all_drop_every_capability(overlay: str) -> None:
    for name, w in workloads(overlay).items():
        for c in pod_spec(w)["containers"]:
            sc = c["securityContext"]
            assert sc.get("privileged", False) is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", name
            assert set(sc["capabilities"].get("add", [])) <= DOCUMENTED_CAPS, name
            req = c["resources"]["requests"]
            assert req["cpu"], name
            assert req["memory"], name
            assert "memory" in c["resources"]["limits"], name
            assert "cpu" not in c["resources"].get("limits", {}), f"{name}: a CPU limit throttles probes"


def test_each_added_capability_carries_a_comment_saying_what_needs_it() -> None:
    text = (DS / "base" / "agent-daemonset.yaml").read_text()
    block = text.split("add:", 1)[1].split("volumeMounts:", 1)[0]
    found = {}
    for line in block.splitlines():
        m = re.match(r"\s*- ([A-Z_]+)\s*(#\s*(.+))?$", line)
        if m:
            found[m.group(1)] = (m.group(3) or "").strip()
    assert set(found) == DOCUMENTED_CAPS
    for cap, why in found.items():
        assert len(why) > 15, f"CAP_{cap} has no comment saying which feature needs it"


def test_the_agent_runs_on_the_host_with_read_only_host_mounts() -> None:
    ds = workloads("base")["cniscope-agent"]
    spec = pod_spec(ds)
    assert spec["hostNetwork"] is True
    assert spec["hostPID"] is True
    assert spec["priorityClassName"] == "cniscope-node"
    assert {"operator": "Exists"} in spec["tolerations"]
    c = spec["containers"][0]
    host_vols = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    for m in c["volumeMounts"]:
        if m["name"] in host_vols and host_vols[m["name"]] not in WRITABLE_HOST_PATHS:
            assert m.get("readOnly") is True, f"{m['mountPath']} must be read-only"
    mounts = {m["mountPath"]: host_vols.get(m["name"]) for m in c["volumeMounts"]}
    assert mounts["/host/proc"] == "/proc"
    for p in ("/sys/fs/bpf", "/sys/kernel/tracing", "/lib/modules", "/usr/src"):
        assert mounts[p] == p
    assert not {"/run", "/var/run", "/run/xtables.lock"} & set(host_vols.values()), "an unused host mount"
    propagation = {m["mountPath"]: m.get("mountPropagation") for m in c["volumeMounts"]}
    assert propagation["/sys/fs/bpf"] == propagation["/sys/kernel/tracing"] == "HostToContainer"
    env = {e["name"]: e for e in c["env"]}
    assert env["CNISCOPE_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["CNISCOPE_HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert env["CNISCOPE_HOST_PROC"]["value"] == "/host/proc"
    assert c["livenessProbe"]["grpc"]["port"] == c["readinessProbe"]["grpc"]["port"]
    health = env["CNISCOPE_HEALTH_LISTEN"]["value"]
    assert health.endswith(f":{c['livenessProbe']['grpc']['port']}")
    assert c["securityContext"]["runAsUser"] == 0


@pytest.mark.parametrize("name", ["cniscope-probe", "cniscope-collector"])
def test_probe_pods_and_collector_meet_pod_security_restricted(name: str) -> None:
    for overlay in OVERLAYS:
        assert restricted_violations(workloads(overlay)[name]) == []


def test_the_restricted_check_rejects_the_agent() -> None:
    found = restricted_violations(workloads("base")["cniscope-agent"])
    assert any("hostNetwork" in v for v in found)
    assert any("adds" in v for v in found)
    assert any("hostPath" in v for v in found)


def test_namespaces_enforce_the_levels_their_pods_need() -> None:
    ns = {d["metadata"]["name"]: d["metadata"]["labels"] for d in docs("base") if d["kind"] == "Namespace"}
    assert ns["cniscope"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert ns["cniscope-probe"]["pod-security.kubernetes.io/enforce"] == "restricted"
    probe = workloads("base")["cniscope-probe"]
    assert probe["metadata"]["namespace"] == "cniscope-probe"


def test_rbac_grants_only_the_least_verbs() -> None:
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs("base")
             if d["kind"] in ("Role", "ClusterRole")}
    agent = roles[("ClusterRole", "cniscope-agent")]
    for rule in agent["rules"]:
        assert set(rule["verbs"]) <= {"get", "list"}
    granted = {r for rule in agent["rules"] for r in rule["resources"]}
    assert granted == {"nodes", "servicecidrs", "daemonsets", "configmaps"}
    for rule in agent["rules"]:                                     # cluster-wide ConfigMaps by name only
        if "configmaps" in rule["resources"]:
            assert rule["resourceNames"] == ["cilium-config"]
    pods = roles[("Role", "cniscope-agent-probe-pods")]
    assert pods["metadata"]["namespace"] == "cniscope-probe"
    for name, ns in (("cniscope-agent-fingerprint", "kube-system"), ("cniscope-agent-apiserver-service", "default")):
        fp = roles[("Role", name)]
        assert fp["metadata"]["namespace"] == ns
        for rule in fp["rules"]:
            assert rule["verbs"] == ["get"]
            assert rule["resourceNames"]
    col = roles[("Role", "cniscope-collector-scaling")]
    assert col["metadata"]["namespace"] == "cniscope-probe"
    writes = {v for rule in col["rules"] for v in rule["verbs"]} - {"get", "list", "watch"}
    assert writes == {"create", "delete"}
    assert [r["resources"] for r in col["rules"] if "create" in r["verbs"]] == [["services"]]
    for d in docs("base"):
        for rule in d.get("rules", []):
            assert "*" not in rule["verbs"]
            assert "*" not in rule["resources"]
            assert not {"secrets", "escalate", "bind", "impersonate"} & {*rule["verbs"], *rule["resources"]}


def test_every_cniscope_setting_in_the_manifests_is_a_real_setting() -> None:
    known = {"CNISCOPE_" + f.name.upper() for cls in (AgentConfig, CollectorConfig)
             for f in dataclasses.fields(cls)}
    known |= {"CNISCOPE_HOST_PROC", "CNISCOPE_HOST_SYS", "CNISCOPE_HOST_RUN"}
    for w in workloads("base").values():
        for c in pod_spec(w)["containers"]:
            for e in c.get("env", []):
                assert e["name"] in known, f"{w['metadata']['name']}: {e['name']} is read by nothing"


def test_collector_service_and_prometheus_annotations() -> None:
    svc = next(d for d in docs("base") if d["kind"] == "Service")
    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    assert ports == {"grpc": 7400, "metrics": 9470}
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == "9470"
    dep = workloads("base")["cniscope-collector"]
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    assert dep["spec"]["replicas"] == 1
    agent = workloads("base")["cniscope-agent"]
    assert agent["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_images_are_set_by_the_kustomization() -> None:
    for w in workloads("base").values():
        for c in pod_spec(w)["containers"]:
            assert c["image"] == "ghcr.io/cniscope/cniscope:0.1.0"


def test_persistent_overlay_puts_the_database_on_a_claim() -> None:
    dep = workloads("overlays/persistent")["cniscope-collector"]
    vols = {v["name"]: v for v in pod_spec(dep)["volumes"]}
    assert vols["data"]["persistentVolumeClaim"]["claimName"] == "cniscope-collector-data"
    assert any(d["kind"] == "PersistentVolumeClaim" for d in docs("overlays/persistent"))
    base = workloads("base")["cniscope-collector"]
    assert "emptyDir" in {v["name"]: v for v in pod_spec(base)["volumes"]}["data"]


def test_added_capabilities_are_exactly_what_the_features_need() -> None:
    from cniscope.agent.caps import FEATURE_CAPS

    needed = {c for caps in FEATURE_CAPS.values() for c in caps}
    ds = workloads("base")["cniscope-agent"]
    added = set(pod_spec(ds)["containers"][0]["securityContext"]["capabilities"]["add"])
    assert added == needed == DOCUMENTED_CAPS
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Kubernetes", 1)[1]
    for cap in DOCUMENTED_CAPS:
        assert f"CAP_{cap}" in section, f"README's Kubernetes section does not say what CAP_{cap} is for"


def test_container_args_are_commands_the_image_understands() -> None:
    from cniscope.agent.health import READINESS
    from cniscope.cli import build_parser

    parser = build_parser()
    for w in workloads("base").values():
        for c in pod_spec(w)["containers"]:
            ns = parser.parse_args(c["args"])
            assert callable(ns.func), c["args"]
    probe = pod_spec(workloads("base")["cniscope-probe"])["containers"][0]
    port = int(probe["args"][probe["args"].index("--port") + 1])
    assert probe["readinessProbe"]["tcpSocket"]["port"] == port
    assert probe["livenessProbe"]["httpGet"]["port"] == port + 1
    agent = pod_spec(workloads("base")["cniscope-agent"])["containers"][0]
    assert agent["readinessProbe"]["grpc"]["service"] == READINESS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_container_sets_a_variable_twice(overlay: str) -> None:
    """An overlay that adds a variable the base already sets would leave two entries, and which one a
    container sees is the runtime's choice: a patch replaces the base's entry instead."""
    for w in workloads(overlay).values():
        for c in pod_spec(w)["containers"]:
            names = [e["name"] for e in c.get("env", [])]
            assert len(names) == len(set(names)), (overlay, w["metadata"]["name"], names)


def test_base_install_checks_kubernetes_identities() -> None:
    """Auth is on in the base install: the collector checks every caller with TokenReview, and each
    agent presents a projected ServiceAccount token for the audience the collector expects (not the
    API server's own token), short-lived and read from the file the kubelet rotates."""
    collector = pod_spec(workloads("base")["cniscope-collector"])["containers"][0]
    cenv = {e["name"]: e.get("value") for e in collector["env"]}
    assert cenv["CNISCOPE_KUBE_AUTH"] == "on"
    agent_spec = pod_spec(workloads("base")["cniscope-agent"])
    agent = agent_spec["containers"][0]
    token_file = Path({e["name"]: e.get("value") for e in agent["env"]}["CNISCOPE_TOKEN_FILE"])
    mount = next(m for m in agent["volumeMounts"] if m["mountPath"] == str(token_file.parent))
    assert mount["readOnly"] is True
    vol = next(v for v in agent_spec["volumes"] if v["name"] == mount["name"])
    (src,) = vol["projected"]["sources"]
    sat = src["serviceAccountToken"]
    assert sat["path"] == token_file.name
    assert sat["audience"] == cenv.get("CNISCOPE_KUBE_AUDIENCE", env_value(CollectorConfig, "kube_audience", {}))
    assert 600 <= sat["expirationSeconds"] <= 3600          # the kubelet's minimum; short-lived
    account = f"system:serviceaccount:cniscope:{agent_spec['serviceAccountName']}"
    assert account == cenv.get("CNISCOPE_KUBE_AGENT_ACCOUNT", env_value(CollectorConfig, "kube_agent_account", {}))


def test_auth_overlay_gives_agents_their_token_and_the_collector_both() -> None:
    """Agents and people hold different secrets: an agent's pod sees only the agent token (the
    collector's agent token file), the collector reads both."""
    env_of = {}
    for name in ("cniscope-agent", "cniscope-collector"):
        spec = pod_spec(workloads("overlays/auth")[name])
        vol = next(v for v in spec["volumes"] if v["name"] == "token")
        assert vol["secret"]["secretName"] == "cniscope-token"
        assert "optional" not in vol["secret"]            # no Secret, no pod: fail closed
        c = spec["containers"][0]
        mount = next(m for m in c["volumeMounts"] if m["name"] == "token")
        assert mount["readOnly"] is True
        env = env_of[name] = {e["name"]: e.get("value") for e in c["env"]}
        for var in ("CNISCOPE_TOKEN_FILE", "CNISCOPE_AGENT_TOKEN_FILE"):
            assert env.get(var, mount["mountPath"] + "/").startswith(mount["mountPath"] + "/")
        if name == "cniscope-agent":
            assert [i["key"] for i in vol["secret"]["items"]] == ["agent-token"]
    assert env_of["cniscope-agent"]["CNISCOPE_TOKEN_FILE"] == env_of["cniscope-collector"]["CNISCOPE_AGENT_TOKEN_FILE"]
    assert env_of["cniscope-collector"]["CNISCOPE_KUBE_AUTH"] == "off"     # static tokens instead
    agent_volumes = [v for v in pod_spec(workloads("overlays/auth")["cniscope-agent"])["volumes"] if "projected" in v]
    assert agent_volumes == []
    assert env_of["cniscope-collector"]["CNISCOPE_TOKEN_FILE"] != env_of["cniscope-collector"]["CNISCOPE_AGENT_TOKEN_FILE"]
