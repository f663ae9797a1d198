"""What the agent asks the Kubernetes API, and what it finds on the node without it.

- node metadata: instance type, zone, kernel, container runtime (``GET /api/v1/nodes/NAME``);
- the data-plane fingerprint: cilium-config, kube-proxy's configuration, the cilium / kube-proxy /
  aws-node DaemonSets in kube-system (named ``get`` only, see daemonset/base/rbac-agent.yaml);
- its node's probe pod: listed by label and ``spec.nodeName``, watched until it runs; its network
  namespace is ``/proc/PID/ns/net`` of a process whose cgroup names the pod's UID.

Blocking calls: run them in a thread. Without an API server (the lab) the fingerprint comes from
:func:`node_facts` and the probe pod is not looked for.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from cniscope.core import kubeapi
from cniscope.core.config import AgentConfig
from cniscope.core.errors import Unavailable
from cniscope.core.fingerprint import ClusterObjects, Fingerprint, NodeFacts, derive
from cniscope.core.hostpaths import HostPaths

log = logging.getLogger("cniscope.agent.cluster_api")

KS = "kube-system"


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
        def cm(name: str) -> dict[str, Any] | None:
            return kubeapi.call(self.core.read_namespaced_config_map, name, KS, what=f"get configmap {KS}/{name}")

        def ds(name: str) -> dict[str, Any] | None:
            return kubeapi.call(self.apps.read_namespaced_daemon_set, name, KS, what=f"get daemonset {KS}/{name}")

        return ClusterObjects(
            cilium_config=cm("cilium-config"), cilium=ds("cilium"), kube_proxy=ds("kube-proxy"),
            kube_proxy_config=cm("kube-proxy-config") or cm("kube-proxy"), aws_node=ds("aws-node"),
        )

    def fingerprint(self) -> Fingerprint:
        return derive(self.objects())

    def probe_pod(self, node: str, namespace: str, selector: str, timeout: float = 0.0) -> ProbePod | None:
        """This node's probe pod once it runs with an IP; list first, then watch up to ``timeout`` seconds."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        what = f"list pods in {namespace}"
        field = f"spec.nodeName={node}"
        listed = kubeapi.call(self.core.list_namespaced_pod, namespace, label_selector=selector,
                           field_selector=field, what=what)
        if listed is None:
            raise Unavailable(f"namespace {namespace!r} does not exist")
        for item in listed.get("items", []):
            pod = _probe_pod(item)
            if pod.phase == "Running" and pod.ip:
                return pod
        if timeout <= 0:
            return None
        deadline = time.monotonic() + timeout
        rv = listed.get("metadata", {}).get("resourceVersion", "")
        w = watch.Watch()  # type: ignore[no-untyped-call]
        try:
            for event in w.stream(self.core.list_namespaced_pod, namespace, label_selector=selector,  # type: ignore[no-untyped-call]
                                  field_selector=field, resource_version=rv,
                                  timeout_seconds=max(1, int(timeout)), _request_timeout=timeout + 5):
                obj = event.get("raw_object") or {}
                pod = _probe_pod(obj)
                if event.get("type") in ("ADDED", "MODIFIED") and pod.phase == "Running" and pod.ip:
                    return pod
                if time.monotonic() > deadline:
                    break
        except (ApiException, HTTPError, OSError) as exc:   # 410 Gone, a dropped stream: say so, do not crash
            raise Unavailable(f"watching pods in {namespace}: {getattr(exc, 'status', '') or type(exc).__name__}") from None
        finally:
            w.stop()  # type: ignore[no-untyped-call]
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
