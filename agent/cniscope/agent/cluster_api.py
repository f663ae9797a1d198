"""What the agent asks the Kubernetes API, and what it finds on the node without it.

- node metadata: instance type, zone, kernel, container runtime (``GET /api/v1/nodes/NAME``);
- the data-plane fingerprint: Cilium's DaemonSet found by label in any namespace and cilium-config
  beside it, kube-proxy's configuration and the kube-proxy / aws-node DaemonSets in kube-system (named
  ``get``), EKS Auto Mode nodes (see daemonset/base/rbac-agent.yaml); on the node, what the
  processes run (:mod:`cniscope.agent.node_dataplane`);
- its node's probe pod: listed by label and ``spec.nodeName``, watched until it runs; its network
  namespace is ``/proc/PID/ns/net`` of a process whose cgroup names the pod's UID.

Blocking calls: run them in a thread. Without an API server (the lab) the fingerprint comes from
:func:`node_facts` and the probe pod is not looked for.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cniscope.core import kubeapi
from cniscope.core.cluster_cidrs import AllowList, CidrObjects, effective
from cniscope.core.config import AgentConfig
from cniscope.core.errors import CniscopeError, Unavailable
from cniscope.core.fingerprint import ClusterObjects, Fingerprint, NodeFacts, derive, from_node, with_node
from cniscope.core.hostpaths import HostPaths

log = logging.getLogger("cniscope.agent.cluster_api")

KS = "kube-system"
CILIUM_SELECTOR = "k8s-app=cilium"                   # the label Cilium's Helm chart gives its DaemonSet
AUTO_MODE = "eks.amazonaws.com/compute-type=auto"   # EKS Auto Mode nodes


@dataclass(frozen=True)
class NodeInfo:
    name: str
    instance_type: str = ""
    zone: str = ""
    region: str = ""
    kernel: str = ""
    container_runtime: str = ""
    os_image: str = ""
    kubelet: str = ""
    internal_ip: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class ProbePod:
    name: str
    uid: str
    ip: str
    node: str
    phase: str


def node_info(obj: dict[str, Any]) -> NodeInfo:
    labels = obj.get("metadata", {}).get("labels", {}) or {}
    status = obj.get("status", {}) or {}
    info = status.get("nodeInfo", {}) or {}
    ip = next((a["address"] for a in status.get("addresses", []) if a.get("type") == "InternalIP"), "")
    return NodeInfo(
        name=obj.get("metadata", {}).get("name", ""),
        instance_type=labels.get("node.kubernetes.io/instance-type", labels.get("beta.kubernetes.io/instance-type", "")),
        zone=labels.get("topology.kubernetes.io/zone", labels.get("failure-domain.beta.kubernetes.io/zone", "")),
        region=labels.get("topology.kubernetes.io/region", ""),
        kernel=info.get("kernelVersion", ""),
        container_runtime=info.get("containerRuntimeVersion", ""),
        os_image=info.get("osImage", ""),
        kubelet=info.get("kubeletVersion", ""),
        internal_ip=ip,
    )


def _probe_pod(obj: dict[str, Any]) -> ProbePod:
    md, st = obj.get("metadata", {}), obj.get("status", {}) or {}
    return ProbePod(name=md.get("name", ""), uid=md.get("uid", ""), ip=st.get("podIP", "") or "",
                    node=obj.get("spec", {}).get("nodeName", ""), phase=st.get("phase", ""))


class ClusterView:
    """Read-only view of the API for one agent."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)

    @classmethod
    def connect(cls, mode: str = "auto", env: dict[str, str] | None = None, *, context: str = "",
                kubeconfig: str = "") -> ClusterView | None:
        """None when the API is not wanted here (the lab); raises Unavailable when wanted but unusable.
        ``context``/``kubeconfig`` choose the API as kubectl's flags of the same names do."""
        if not kubeapi.wanted(mode, env):
            return None
        return cls(kubeapi.api_client(env, context=context, kubeconfig=kubeconfig))

    def node(self, name: str) -> NodeInfo:
        obj = kubeapi.call(self.core.read_node, name, what=f"get node {name}")
        if obj is None:
            raise Unavailable(f"node {name!r} is not known to the API server")
        return node_info(obj)

    def objects(self) -> ClusterObjects:
        def cm(name: str, ns: str = KS) -> dict[str, Any] | None:
            return kubeapi.call(self.core.read_namespaced_config_map, name, ns, what=f"get configmap {ns}/{name}")

        def ds(name: str) -> dict[str, Any] | None:
            return kubeapi.call(self.apps.read_namespaced_daemon_set, name, KS, what=f"get daemonset {KS}/{name}")

        cilium, ns = self.cilium_daemonset()
        kp_name = "kube-proxy-config"
        kp_config = cm(kp_name)
        if kp_config is None:
            kp_name, kp_config = "kube-proxy", cm("kube-proxy")
        auto = kubeapi.call(self.core.list_node, label_selector=AUTO_MODE, limit=1, what="list nodes (EKS Auto Mode)")
        return ClusterObjects(
            cilium_config=cm("cilium-config", ns), cilium=cilium, kube_proxy=ds("kube-proxy"),
            kube_proxy_config=kp_config, aws_node=ds("aws-node"), cilium_namespace=ns,
            kube_proxy_config_name=kp_name, auto_mode_nodes=len((auto or {}).get("items", [])),
        )

    def cilium_daemonset(self) -> tuple[dict[str, Any] | None, str]:
        """Cilium's DaemonSet by its chart's label, in whatever namespace it was installed, and that
        namespace (kube-system when there is none)."""
        listed = kubeapi.call(self.apps.list_daemon_set_for_all_namespaces, label_selector=CILIUM_SELECTOR,
                              what=f"list daemonsets -l {CILIUM_SELECTOR} in all namespaces")
        items = sorted((listed or {}).get("items", []),
                       key=lambda d: (d["metadata"].get("namespace") != KS, d["metadata"].get("namespace", "")))
        if not items:
            return None, KS
        return items[0], items[0]["metadata"].get("namespace", KS)

    def fingerprint(self, paths: HostPaths | None = None) -> Fingerprint:
        """From the API's objects; with ``paths`` (an agent on its node) overlaid with what the node's
        processes run (:mod:`cniscope.agent.node_dataplane`)."""
        objs = self.objects()
        if paths is None:
            return derive(objs)
        from cniscope.agent import node_dataplane

        return with_node(objs, node_dataplane.read(paths))

    def _optional(self, fn: Any, *args: Any, what: str, notes: list[str], **kwargs: Any) -> dict[str, Any] | None:
        """One read that discovery can do without: a refusal becomes a note, not a failure."""
        try:
            return kubeapi.call(fn, *args, what=what, **kwargs)
        except Unavailable as exc:
            if "unreachable" in str(exc):
                raise
            notes.append(str(exc))
            return None

    def cidr_objects(self) -> CidrObjects:
        """The objects the probe allow-list is derived from (:mod:`cniscope.core.cluster_cidrs`)."""
        from kubernetes import client

        notes: list[str] = []
        custom = client.CustomObjectsApi(self.api)
        nodes: list[dict[str, Any]] = []
        cont = ""
        while True:
            page = self._optional(self.core.list_node, what="list nodes", notes=notes, limit=500,
                                  **({"_continue": cont} if cont else {}))
            nodes += (page or {}).get("items", [])
            cont = ((page or {}).get("metadata") or {}).get("continue", "")
            if not cont:
                break
        service_cidrs, served = None, ""
        for version in ("v1", "v1beta1"):
            listed = self._optional(custom.list_cluster_custom_object, "networking.k8s.io", version, "servicecidrs",
                                    what=f"list servicecidrs.networking.k8s.io/{version}", notes=notes)
            if listed is not None:
                service_cidrs, served = listed.get("items", []), f"networking.k8s.io/{version}"
                break

        def cm(name: str) -> dict[str, Any] | None:
            return self._optional(self.core.read_namespaced_config_map, name, KS, what=f"get configmap {KS}/{name}",
                                  notes=notes)

        try:
            cilium_ns = self.cilium_daemonset()[1]
        except Unavailable as exc:
            if "unreachable" in str(exc):
                raise
            cilium_ns = KS
            notes.append(str(exc))

        return CidrObjects(
            nodes=nodes, service_cidrs=service_cidrs, service_cidr_api=served,
            kubernetes_service=self._optional(self.core.read_namespaced_service, "kubernetes", "default",
                                              what="get service default/kubernetes", notes=notes),
            kubeadm_config=None if service_cidrs else cm("kubeadm-config"),
            kube_proxy_config=cm("kube-proxy-config") or cm("kube-proxy"),
            cilium_config=self._optional(self.core.read_namespaced_config_map, "cilium-config", cilium_ns,
                                         what=f"get configmap {cilium_ns}/cilium-config", notes=notes),
            notes=tuple(notes))

    def probe_pod(self, node: str, namespace: str, selector: str, timeout: float = 0.0) -> ProbePod | None:
        """This node's probe pod once it runs with an IP: listed, then watched up to ``timeout`` seconds.
        A watch whose stream ends (an API server restart, a proxy's idle cut) resumes from the last
        resourceVersion it saw; when that version has expired (410 Gone) the pods are listed again."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        field = f"spec.nodeName={node}"
        deadline = time.monotonic() + max(0.0, timeout)
        rv = ""
        while True:
            if not rv:
                listed = kubeapi.call(self.core.list_namespaced_pod, namespace, label_selector=selector,
                                      field_selector=field, what=f"list pods in {namespace}")
                if listed is None:
                    raise Unavailable(f"namespace {namespace!r} does not exist")
                for item in listed.get("items", []):
                    pod = _probe_pod(item)
                    if pod.phase == "Running" and pod.ip:
                        return pod
                rv = listed.get("metadata", {}).get("resourceVersion", "")
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            w = watch.Watch()  # type: ignore[no-untyped-call]
            log.debug("watching pods in %s from resourceVersion %s", namespace, rv)
            try:
                for event in w.stream(self.core.list_namespaced_pod, namespace, label_selector=selector,  # type: ignore[no-untyped-call]
                                      field_selector=field, resource_version=rv,
                                      timeout_seconds=max(1, int(left)), _request_timeout=left + 5):
                    obj = event.get("raw_object") or {}
                    rv = obj.get("metadata", {}).get("resourceVersion", "") or rv
                    pod = _probe_pod(obj)
                    if event.get("type") in ("ADDED", "MODIFIED") and pod.phase == "Running" and pod.ip:
                        return pod
                    if time.monotonic() > deadline:
                        return None
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch of pods in %s expired at resourceVersion %s (410 Gone): listing again",
                             namespace, rv)
                    rv = ""
                elif exc.status in (429, 500, 503, 504):   # a restarting API server's caches are not ready
                    log.info("watch of pods in %s refused for now (%s): retrying", namespace, exc.status)
                    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                else:
                    raise Unavailable(f"watching pods in {namespace}: {exc.status} {exc.reason}") from None
            except (HTTPError, OSError) as exc:   # the API server went away: resume while time is left
                log.info("watch of pods in %s broke (%s): resuming from resourceVersion %s",
                         namespace, type(exc).__name__, rv)
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            finally:
                w.stop()  # type: ignore[no-untyped-call]
            if rv and time.monotonic() >= deadline:
                return None


# ---- the node side ------------------------------------------------------------------------------
def find_pod_pid(paths: HostPaths, pod_uid: str) -> int | None:
    """A PID in the host PID namespace whose cgroup path names the pod UID (cgroupfs or systemd driver)."""
    forms = {pod_uid, pod_uid.replace("-", "_")}
    best: int | None = None
    for entry in os.scandir(paths.proc):
        if not entry.name.isdigit():
            continue
        try:
            text = (paths.proc_path(entry.name, "cgroup")).read_text()
        except OSError:
            continue
        if any(f in text for f in forms):
            pid = int(entry.name)
            # skip the pause (sandbox) process when a container process exists: both share the netns
            best = pid if best is None else min(best, pid)
    return best


def pod_netns(paths: HostPaths, pod_uid: str) -> str:
    pid = find_pod_pid(paths, pod_uid)
    if pid is None:
        raise Unavailable(f"no process of pod {pod_uid} is visible in {paths.proc} (is hostPID set?)")
    return str(paths.proc_path(pid, "ns", "net"))


def node_facts(paths: HostPaths) -> NodeFacts:
    procs: set[str] = set()
    for entry in os.scandir(paths.proc):
        if entry.name.isdigit():
            try:
                procs.add(paths.proc_path(entry.name, "comm").read_text().strip())
            except OSError:
                continue
    try:
        maps = any(n.startswith("cilium_") for n in os.listdir(paths.sys_path("fs", "bpf", "tc", "globals")))
    except OSError:
        maps = False
    return NodeFacts(processes=frozenset(procs), cilium_maps=maps)


def node_fingerprint(paths: HostPaths) -> Fingerprint:
    """Without the API: the CNI processes and rules seen here, and what those processes run."""
    from cniscope.agent import node_dataplane

    return from_node(node_facts(paths), node_dataplane.read(paths))


def discover_probe_pod(cfg: AgentConfig, paths: HostPaths, view: ClusterView, timeout: float = 30.0) -> ProbePod | None:
    """Fill ``cfg.pod_ip`` and ``cfg.pod_netns`` from this node's probe pod, unless already set."""
    if cfg.pod_netns:
        return None
    pod = view.probe_pod(cfg.node, cfg.probe_namespace, cfg.probe_selector, timeout=timeout)
    if pod is None:
        log.warning("no running probe pod on node %s (namespace %s, selector %s); pod paths unavailable",
                    cfg.node, cfg.probe_namespace, cfg.probe_selector)
        return None
    cfg.pod_netns = pod_netns(paths, pod.uid)
    cfg.pod_ip = cfg.pod_ip or pod.ip
    log.info("probe pod %s (%s) on %s: netns %s", pod.name, pod.ip, cfg.node, cfg.pod_netns)
    return pod


_ALLOW_LIST: AllowList | None = None


def resolve_allow_list(cfg: AgentConfig, view: ClusterView | None, env: Mapping[str, str] | None = None) -> AllowList:
    """Set ``cfg.allow_cidrs`` to the probe allow-list: ``CNISCOPE_ALLOW_CIDRS`` when set, else what the
    cluster's objects say, else the configured default (the lab). Kept for the capability report."""
    global _ALLOW_LIST
    e = os.environ if env is None else env
    configured = e.get("CNISCOPE_ALLOW_CIDRS")
    objs = None
    if configured is None and view is not None:
        try:
            objs = view.cidr_objects()
        except CniscopeError as exc:
            log.warning("probe allow-list not discovered, keeping %s: %s", cfg.allow_cidrs, exc)
    allow = effective(configured, objs, cfg.allow_cidrs)
    cfg.allow_cidrs = allow.spec()
    _ALLOW_LIST = allow
    log.info("probe allow-list (%s): %s", allow.origin, allow.spec() or "known agents only")
    for note in allow.notes:
        log.info("probe allow-list: %s", note)
    return allow


def current_allow_list(cfg: AgentConfig) -> AllowList:
    """The allow-list this agent resolved at start, or the configured one before that (the lab)."""
    return _ALLOW_LIST if _ALLOW_LIST is not None else effective(os.environ.get("CNISCOPE_ALLOW_CIDRS"), None,
                                                                 cfg.allow_cidrs)


def reconcile_probe_pod(cfg: AgentConfig, paths: HostPaths, view: ClusterView, current_uid: str) -> ProbePod | None:
    """Re-point ``cfg`` at this node's running probe pod when it was replaced (new UID or IP) or its
    process is gone; return the new pod, or None when nothing changed (or no pod runs right now)."""
    pod = view.probe_pod(cfg.node, cfg.probe_namespace, cfg.probe_selector, timeout=0)
    if pod is None:
        return None
    if pod.uid == current_uid and pod.ip == cfg.pod_ip and cfg.pod_netns and os.path.exists(cfg.pod_netns):
        return None
    cfg.pod_netns = pod_netns(paths, pod.uid)
    cfg.pod_ip = pod.ip
    log.info("probe pod on %s is now %s (%s): netns %s", cfg.node, pod.name, pod.ip, cfg.pod_netns)
    return pod
