"""What `cniscope k8s preflight` checks before an install, each check pass / warn / fail with its fix.

The checks are pure functions over what was read from the cluster (:class:`Gathered`) and the
rendered install (its objects), so each verdict is testable on recorded objects; :func:`gather`
does the reading with the user's kubeconfig.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cniscope.core.cluster_cidrs import AllowList
from cniscope.core.errors import CniscopeError, Unavailable
from cniscope.core.fingerprint import Fingerprint

PASS, WARN, FAIL = "pass", "warn", "fail"
Obj = dict[str, Any]
MIN_MINOR = 30              # ValidatingAdmissionPolicy v1 and securityContext.appArmorProfile are 1.30+
BPF_KERNEL = (5, 8)         # CAP_BPF and CAP_PERFMON exist from Linux 5.8
ARCHES = {"amd64", "arm64"}  # what `make image` builds
UNPUBLISHED = "ghcr.io/cniscope/cniscope"
SERVERLESS = {"eks.amazonaws.com/compute-type": {"fargate", "hybrid"}, "type": {"virtual-kubelet"}}
SELINUX_OS = re.compile(r"bottlerocket|red hat|rhel|centos|fedora|rocky|alma|oracle linux|coreos", re.I)
APPARMOR_OS = re.compile(r"ubuntu|debian|suse|container-optimized os|cos", re.I)
PLURAL = {"PriorityClass": "priorityclasses", "ValidatingAdmissionPolicy": "validatingadmissionpolicies"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    message: str
    fix: str = ""


@dataclass
class Gathered:
    """What preflight read; an entry is an exception where reading it failed."""

    server: str = ""
    version: Obj | CniscopeError | None = None
    nodes: Sequence[Obj] | CniscopeError = ()
    namespaces: dict[str, Obj | None] = field(default_factory=dict)
    access: dict[str, bool | CniscopeError] = field(default_factory=dict)   # "create apps/daemonsets -n ns" → allowed
    fingerprint: Fingerprint | CniscopeError | None = None
    allow_list: AllowList | CniscopeError | None = None
    install: Sequence[Obj] | CniscopeError = ()


def resource_of(kind: str) -> str:
    return PLURAL.get(kind, kind.lower() + "s")


def access_key(obj: Obj) -> tuple[str, str, str, str]:
    """(verb, group, resource, namespace) of creating ``obj``."""
    group = obj.get("apiVersion", "v1").rpartition("/")[0]
    return "create", group, resource_of(obj["kind"]), obj.get("metadata", {}).get("namespace", "")


def describe_access(key: tuple[str, str, str, str]) -> str:
    verb, group, resource, ns = key
    return f"{verb} {group + '/' if group else ''}{resource}" + (f" -n {ns}" if ns else "")


# ---- the checks ---------------------------------------------------------------------------------
def check_api(g: Gathered) -> Check:
    if isinstance(g.version, CniscopeError) or g.version is None:
        return Check("api", FAIL, f"cannot reach the API server{' ' + g.server if g.server else ''}: {g.version}",
                     "check the kubeconfig context (--context, kubectl config get-contexts), VPN and credentials; "
                     "`kubectl version` must work first")
    git = g.version.get("gitVersion", "?")
    m = re.match(r"(\d+)", str(g.version.get("minor", "")))
    minor = int(m.group(1)) if m else 0
    if minor and minor < MIN_MINOR:
        return Check("api", FAIL, f"Kubernetes {git}: the install needs 1.{MIN_MINOR}+ "
                                  "(ValidatingAdmissionPolicy v1, securityContext.appArmorProfile)",
                     "upgrade the cluster, or drop admission-policy.yaml and appArmorProfile in an overlay")
    return Check("api", PASS, f"Kubernetes {git} at {g.server}")


def check_rbac(g: Gathered) -> Check:
    if isinstance(g.install, CniscopeError):
        return Check("rbac", WARN, f"install not rendered, so not checked: {g.install}", "pass --manifests DIR")
    missing, unknown = [], []
    for key in sorted({access_key(o) for o in g.install}):
        got = g.access.get(describe_access(key))
        if isinstance(got, CniscopeError):
            unknown.append(f"{describe_access(key)} ({got})")
        elif got is False:
            missing.append(describe_access(key))
    if missing:
        return Check("rbac", FAIL, "you may not " + "; ".join(missing),
                     "apply as a cluster admin (the install creates ClusterRoles, an admission policy and a "
                     "PriorityClass), or have these verbs granted")
    if unknown:
        return Check("rbac", WARN, "could not ask: " + "; ".join(unknown), "")
    return Check("rbac", PASS, f"you may create all {len(g.install)} install objects (SelfSubjectAccessReview)")


def check_pod_security(g: Gathered) -> Check:
    wanted = {"cniscope": "privileged", "cniscope-probe": "restricted"}
    problems = []
    for ns, level in wanted.items():
        obj = g.namespaces.get(ns)
        have = ((obj or {}).get("metadata", {}).get("labels") or {}).get("pod-security.kubernetes.io/enforce")
        if obj is not None and have not in (None, level):
            problems.append(f"namespace {ns} enforces {have!r}, the install sets {level!r}")
    if problems:
        return Check("pod-security", WARN, "; ".join(problems),
                     "applying relabels them; if a policy engine (Kyverno, Gatekeeper) pins the labels, "
                     "exempt the cniscope namespace: the agent needs hostNetwork, hostPID and host mounts")
    return Check("pod-security", PASS, "cniscope will enforce 'privileged' (the agent only), "
                                        "cniscope-probe 'restricted'")


def _kernel(text: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def serverless(node: Obj) -> str:
    labels = node.get("metadata", {}).get("labels") or {}
    for key, values in SERVERLESS.items():
        if labels.get(key) in values:
            return f"{key}={labels[key]}"
    return ""


def check_nodes(g: Gathered) -> list[Check]:
    if isinstance(g.nodes, CniscopeError):
        return [Check("nodes", FAIL, f"cannot list nodes: {g.nodes}", "you need list on nodes to run preflight")]
    real = [n for n in g.nodes if not serverless(n)]
    linux = [n for n in real if (n.get("status", {}).get("nodeInfo") or {}).get("operatingSystem") == "linux"]
    out = []
    if not linux:
        out.append(Check("nodes", FAIL, "no Linux node to run an agent on", "add a Linux node group"))
        return out
    bad_arch = sorted({i.get("architecture", "?") for n in linux
                       if (i := n["status"].get("nodeInfo") or {}).get("architecture") not in ARCHES})
    old = [n["metadata"]["name"] for n in linux if _kernel(n["status"]["nodeInfo"].get("kernelVersion", "")) < BPF_KERNEL]
    runtimes = sorted({(n["status"]["nodeInfo"].get("containerRuntimeVersion") or "?").split(":")[0] for n in linux})
    kernels = sorted({n["status"]["nodeInfo"].get("kernelVersion", "?") for n in linux})
    summary = (f"{len(linux)} Linux node(s); arch {', '.join(sorted({n['status']['nodeInfo'].get('architecture', '?') for n in linux}))}; "
               f"kernel {', '.join(kernels[:3])}{' …' if len(kernels) > 3 else ''}; runtime {', '.join(runtimes)}")
    if bad_arch:
        out.append(Check("nodes", FAIL, f"{summary}; no image for {', '.join(bad_arch)}",
                         "the image is built for linux/amd64 and linux/arm64 only"))
    elif old:
        out.append(Check("nodes", WARN, f"{summary}; kernel before 5.8 on {', '.join(old[:3])}: no CAP_BPF/CAP_PERFMON",
                         "apply daemonset/overlays/minimal there (no eBPF census, no tracers)"))
    elif "docker" in runtimes:
        out.append(Check("nodes", WARN, f"{summary}; docker runtime", "hostPID lookups of the probe pod assume CRI cgroup names"))
    else:
        out.append(Check("nodes", PASS, summary))
    return out


def check_serverless(g: Gathered) -> Check:
    if isinstance(g.nodes, CniscopeError):
        return Check("serverless-nodes", WARN, "nodes not listed", "")
    odd = [f"{n['metadata']['name']} ({serverless(n)})" for n in g.nodes if serverless(n)]
    if odd:
        return Check("serverless-nodes", WARN, f"{len(odd)} node(s) without a kernel of their own: {', '.join(odd[:5])}"
                     + (" …" if len(odd) > 5 else ""),
                     "nothing to do: the DaemonSets skip them (nodeAffinity); pods there are not measured")
    return Check("serverless-nodes", PASS, "no Fargate, hybrid or virtual-kubelet nodes")


def check_data_plane(g: Gathered) -> Check:
    fp = g.fingerprint
    if isinstance(fp, CniscopeError) or fp is None:
        return Check("data-plane", WARN, f"fingerprint not read: {fp}",
                     "grant get on the kube-system objects in daemonset/base/rbac-agent.yaml to read it")
    text = f"CNI {fp.cni} {fp.cni_version}".rstrip() + f", kube-proxy {fp.kube_proxy}, routing {fp.routing}"
    if fp.scenario():
        text += f" (scenario {fp.scenario()})"
    if fp.cni == "unknown":
        return Check("data-plane", WARN, text, "the agents still measure; runs will show the CNI as unknown")
    return Check("data-plane", PASS, text)


def check_service_cidr(g: Gathered) -> Check:
    allow = g.allow_list
    if isinstance(allow, CniscopeError) or allow is None:
        return Check("service-cidr", WARN, f"not discovered: {allow}", "set CNISCOPE_ALLOW_CIDRS in an overlay")
    services = [c for c in allow.cidrs if c.role == "services"]
    if not services:
        return Check("service-cidr", WARN, "no Service CIDR found; pod → Service probes will be refused",
                     "set CNISCOPE_ALLOW_CIDRS=<your Service CIDR> on the agent in an overlay")
    text = ", ".join(f"{c.cidr} ({c.source})" for c in services)
    if any("guess" in c.source for c in services):
        return Check("service-cidr", WARN, text, "set CNISCOPE_ALLOW_CIDRS if the range is wider")
    return Check("service-cidr", PASS, text)


def check_lsm(g: Gathered) -> Check:
    if isinstance(g.nodes, CniscopeError):
        return Check("apparmor-selinux", WARN, "nodes not listed", "")
    images = {(n.get("status", {}).get("nodeInfo") or {}).get("osImage", "") for n in g.nodes if not serverless(n)}
    selinux = sorted(i for i in images if SELINUX_OS.search(i))
    apparmor = sorted(i for i in images if APPARMOR_OS.search(i))
    if selinux:
        return Check("apparmor-selinux", WARN, f"SELinux is likely enforcing on {', '.join(selinux)}",
                     "apply daemonset/overlays/selinux (agent as spc_t) instead of the base")
    if apparmor:
        return Check("apparmor-selinux", PASS, f"AppArmor on {', '.join(apparmor)}: the agent runs Unconfined "
                                               "(securityContext.appArmorProfile)")
    return Check("apparmor-selinux", PASS, f"no AppArmor/SELinux distribution recognised ({', '.join(sorted(images))})")


def check_image(g: Gathered) -> Check:
    if isinstance(g.install, CniscopeError):
        return Check("image", WARN, f"install not rendered: {g.install}", "pass --manifests DIR")
    images = sorted({c["image"] for o in g.install
                     for c in (o.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [])})
    if not images:
        return Check("image", FAIL, "no container image in the manifests", "point --manifests at the kustomization")
    bad = [i for i in images if "/" not in i.split("@")[0] or ":" not in i.rsplit("/", 1)[-1] and "@" not in i]
    if bad:
        return Check("image", FAIL, f"unresolved image reference {', '.join(bad)}",
                     "set kustomize images: newName/newTag (README: Bring your own registry)")
    if any(i.split("@")[0].rsplit(":", 1)[0] == UNPUBLISHED for i in images):
        return Check("image", FAIL, f"{', '.join(images)} is not published",
                     "make image IMAGE=<registry>/cniscope, then an overlay with kustomize images: (README)")
    if any(i.endswith(":latest") for i in images):
        return Check("image", WARN, f"{', '.join(images)}: 'latest' changes under you", "pin a version tag or digest")
    return Check("image", PASS, ", ".join(images))


CHECKS: list[Callable[[Gathered], Check | list[Check]]] = [
    check_api, check_rbac, check_pod_security, check_nodes, check_serverless, check_data_plane,
    check_service_cidr, check_lsm, check_image]


def run_checks(g: Gathered) -> list[Check]:
    out: list[Check] = []
    for fn in CHECKS:
        got = fn(g)
        out += got if isinstance(got, list) else [got]
    if out and out[0].status == FAIL:        # the API is down: the API-read checks would only repeat it
        out = [out[0], *[c for c in out[1:] if c.name in ("image",)]]
    return out


def to_json(checks: Sequence[Check]) -> dict[str, Any]:
    return {"ok": all(c.status != FAIL for c in checks), "checks": [asdict(c) for c in checks]}


def attempt(fn: Callable[[], Any]) -> Any:
    """``fn()``, or the CniscopeError it raised (stored in :class:`Gathered` as the reason)."""
    try:
        return fn()
    except CniscopeError as exc:
        return exc
    except OSError as exc:
        return Unavailable(str(exc))
