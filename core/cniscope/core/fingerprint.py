"""The data-plane fingerprint of a cluster: CNI and version, kube-proxy mode, routing mode, IPAM and
tuning flags — derived as a pure function of the objects the API server holds (cilium-config and the
cilium DaemonSet wherever Cilium is installed, the kube-proxy / aws-node DaemonSets, kube-proxy's
configuration, EKS Auto Mode nodes), overlaid with what the node actually runs where an agent reads
it (:class:`NodeDataPlane`: Cilium's effective configuration, kube-proxy's mode), or, without an
API server (the lab), of what the agent sees on its node. Each fact says where it came from
(``Fingerprint.sources``: API object, node process, or a default).

``Fingerprint.scenario()`` names the benchmark scenario a fingerprint matches (A: VPC CNI;
B: Cilium + kube-proxy; C: kube-proxy-less; D: ENI native routing; E: ENI + tuning).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from cniscope.api.v1 import capabilities_pb2

Obj = Mapping[str, Any]

# Cilium 1.16 chart defaults for the conntrack tables (bpf-ct-global-*-max when not overridden).
CT_TCP_DEFAULT = 524288
CT_ANY_DEFAULT = 262144

# The tuning items of scenario E, as flags.
E_TUNING = frozenset({"bpf-host-routing", "bandwidth-manager", "bbr", "bpf-masquerade", "socket-lb"})
# On whenever Cilium replaces kube-proxy (its kpr init "auto-enables" socket LB), so C and D have it too.
KPR_IMPLIED = frozenset({"socket-lb"})

SCENARIOS = {
    "A": "VPC CNI",
    "B": "Cilium + kube-proxy",
    "C": "Cilium kube-proxy-less",
    "D": "Cilium ENI native routing",
    "E": "Cilium ENI + tuning",
}


@dataclass(frozen=True)
class ClusterObjects:
    """Raw API objects (as JSON dicts); None where the API answered 404."""

    cilium_config: Obj | None = None      # ConfigMap cilium-config in Cilium's namespace
    cilium: Obj | None = None             # DaemonSet labelled k8s-app=cilium, in any namespace
    kube_proxy: Obj | None = None         # DaemonSet kube-system/kube-proxy
    kube_proxy_config: Obj | None = None  # ConfigMap kube-system/kube-proxy-config (EKS) or kube-proxy (kubeadm)
    aws_node: Obj | None = None           # DaemonSet kube-system/aws-node
    cilium_namespace: str = "kube-system"
    kube_proxy_config_name: str = "kube-proxy-config"
    auto_mode_nodes: int = 0              # Nodes labelled eks.amazonaws.com/compute-type=auto


@dataclass(frozen=True)
class NodeDataPlane:
    """What the node runs, read by the agent from the processes themselves."""

    cilium_config: Mapping[str, str] | None = None   # cilium-agent's effective options (config dir + flags)
    cilium_source: str = ""                          # e.g. "process cilium-agent (pid 812): --config-dir …"
    kube_proxy_mode: str = ""                        # iptables | ipvs | nftables; "" unknown
    kube_proxy_source: str = ""


@dataclass(frozen=True)
class NodeFacts:
    """What an agent sees on its node without the API: running processes, kube-proxy's chains."""

    processes: frozenset[str] = frozenset()
    kube_services_chain: bool = False     # a KUBE-SERVICES chain in iptables or nft
    cilium_maps: bool = False             # cilium_* BPF maps exist


@dataclass(frozen=True)
class Fingerprint:
    cni: str = "unknown"          # aws-vpc-cni | cilium | calico | flannel | none | unknown
    cni_version: str = ""
    kube_proxy: str = "unknown"   # iptables | nftables | ipvs | ebpf (replaced by the CNI) | none | unknown
    routing: str = "unknown"      # native | tunnel-vxlan | tunnel-geneve | unknown
    ipam: str = "unknown"         # eni-secondary-ip | eni-prefix | eni | cluster-pool | kubernetes | ...
    tuning: tuple[str, ...] = ()  # sorted flags explicitly set: bpf-host-routing, bandwidth-manager, bbr, ...
    source: str = "kubernetes"    # kubernetes | kubernetes+node (API and this node's processes) | node
    notes: tuple[str, ...] = field(default=(), compare=False)
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # (fact, where it came from)

    def scenario(self) -> str | None:
        t = set(self.tuning)
        if self.cni == "aws-vpc-cni" and self.kube_proxy == "iptables":
            return "A"
        if self.cni != "cilium":
            return None
        if self.kube_proxy == "iptables" and self.routing.startswith("tunnel"):
            return "B"
        if self.kube_proxy == "ebpf" and self.routing.startswith("tunnel") and not t & (E_TUNING - KPR_IMPLIED):
            return "C"
        if self.kube_proxy == "ebpf" and self.routing == "native" and self.ipam == "eni":
            if E_TUNING <= t:
                return "E"
            if not t & (E_TUNING - KPR_IMPLIED):
                return "D"
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tuning"], d["notes"] = list(self.tuning), list(self.notes)
        d["sources"] = dict(self.sources)
        d["scenario"] = self.scenario()
        return d

    def to_proto(self) -> capabilities_pb2.DataPlaneFingerprint:
        return capabilities_pb2.DataPlaneFingerprint(
            cni=self.cni, cni_version=self.cni_version, kube_proxy=self.kube_proxy, routing=self.routing,
            ipam=self.ipam, tuning=self.tuning, source=self.source, notes=self.notes, scenario=self.scenario() or "",
            sources=[capabilities_pb2.FactSource(fact=f, source=w) for f, w in self.sources])


def image_version(ds: Obj | None, container: str | None = None) -> str:
    """``1.16.5`` from ``quay.io/cilium/cilium:v1.16.5@sha256:…`` (first container, or the named one)."""
    if not ds:
        return ""
    containers = ds.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    for c in containers:
        if container is None or c.get("name") == container:
            m = re.search(r":v?(\d+\.\d+\.\d+)", c.get("image", ""))
            return m.group(1) if m else ""
    return ""


def _scheduled(ds: Obj | None) -> bool:
    """A DaemonSet that exists and runs somewhere (one patched to no node does not count)."""
    if not ds:
        return False
    status = ds.get("status") or {}
    return int(status.get("desiredNumberScheduled", 1)) > 0


def _env(ds: Obj | None, name: str) -> str:
    if not ds:
        return ""
    for c in ds.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        for e in c.get("env", []) or []:
            if e.get("name") == name:
                return str(e.get("value", ""))
    return ""


def kube_proxy_mode(config_data: Obj | None) -> str:
    """The ``mode`` of a KubeProxyConfiguration held in a ConfigMap's data (empty means iptables)."""
    if not config_data:
        return "iptables"
    for text in config_data.values():
        if not isinstance(text, str) or "KubeProxyConfiguration" not in text:
            continue
        m = re.search(r"^mode:\s*[\"']?([A-Za-z]*)[\"']?\s*$", text, re.MULTILINE)
        return (m.group(1) if m else "") or "iptables"
    return "iptables"


def _cilium_tuning(cfg: Mapping[str, str], kpr: bool) -> list[str]:
    flags = []
    legacy = cfg.get("enable-host-legacy-routing")
    bpf_masq = cfg.get("enable-bpf-masquerade") == "true"
    if legacy == "false" or (legacy is None and kpr and bpf_masq):
        flags.append("bpf-host-routing")
    if cfg.get("enable-bandwidth-manager") == "true":
        flags.append("bandwidth-manager")
    if cfg.get("enable-bbr") == "true":
        flags.append("bbr")
    if bpf_masq:
        flags.append("bpf-masquerade")
    if cfg.get("bpf-lb-sock") == "true" or kpr:
        flags.append("socket-lb")
    if cfg.get("bpf-lb-acceleration", "disabled") not in ("disabled", ""):
        flags.append("xdp-acceleration")
    if cfg.get("bpf-lb-mode") in ("dsr", "hybrid"):
        flags.append("dsr")
    if cfg.get("datapath-mode") == "netkit":
        flags.append("netkit")
    tcp = int(cfg.get("bpf-ct-global-tcp-max", "0") or 0)
    anym = int(cfg.get("bpf-ct-global-any-max", "0") or 0)
    if tcp > CT_TCP_DEFAULT or anym > CT_ANY_DEFAULT:
        flags.append("ct-expanded")
    if cfg.get("enable-hubble") == "false":
        flags.append("hubble-off")
    return sorted(flags)


def derive(objs: ClusterObjects, cilium_from: str = "") -> Fingerprint:
    """The fingerprint the objects imply; ``cilium_from`` names where ``objs.cilium_config`` was read
    when it is not the API's ConfigMap (the node's cilium-agent process)."""
    notes: list[str] = []
    src: dict[str, str] = {}
    cfg: Mapping[str, str] = (objs.cilium_config or {}).get("data") or {}
    cilium = objs.cilium_config is not None and (objs.cilium is None or _scheduled(objs.cilium))
    aws = _scheduled(objs.aws_node)
    kp_running = _scheduled(objs.kube_proxy)
    ns = objs.cilium_namespace
    cfg_from = cilium_from or f"API: ConfigMap {ns}/cilium-config"
    if cilium:
        chaining = cfg.get("cni-chaining-mode", "none")
        cni = "cilium" if chaining in ("none", "") else f"cilium+{chaining}"
        version = image_version(objs.cilium, "cilium-agent")
        src["cni"] = f"API: DaemonSet {ns}/cilium" if objs.cilium else cfg_from
        if version:
            src["cni_version"] = f"API: DaemonSet {ns}/cilium image"
        if aws and chaining in ("none", ""):
            notes.append("aws-node is still scheduled next to Cilium")
        kpr = cfg.get("kube-proxy-replacement", "false") in ("true", "strict")
        if kpr:
            kube_proxy = "ebpf"
            src["kube_proxy"] = f"{cfg_from}: kube-proxy-replacement"
            if kp_running:
                notes.append("kube-proxy still runs although Cilium replaces it")
        else:
            kube_proxy = _kube_proxy(objs, kp_running, src)
        mode = cfg.get("routing-mode") or ("native" if cfg.get("tunnel") == "disabled" else "tunnel")
        routing = "native" if mode == "native" else "tunnel-" + (cfg.get("tunnel-protocol") or cfg.get("tunnel") or "vxlan")
        ipam = cfg.get("ipam", "cluster-pool")
        src["routing"] = cfg_from + ("" if "routing-mode" in cfg or "tunnel" in cfg else " (Cilium's default)")
        src["ipam"] = cfg_from + ("" if "ipam" in cfg else " (Cilium's default)")
        tuning = tuple(_cilium_tuning(cfg, kpr))
        if tuning:
            src["tuning"] = cfg_from
        if kpr and cfg.get("bpf-lb-sock") != "true":
            src["tuning.socket-lb"] = "default: implied by kube-proxy-replacement (Cilium auto-enables socket LB)"
    elif aws:
        cni = "aws-vpc-cni"
        version = image_version(objs.aws_node, "aws-node")
        src["cni"] = "API: DaemonSet kube-system/aws-node"
        kube_proxy = _kube_proxy(objs, kp_running, src)
        routing = "native"
        ipam = "eni-prefix" if _env(objs.aws_node, "ENABLE_PREFIX_DELEGATION") == "true" else "eni-secondary-ip"
        src["ipam"] = "API: DaemonSet kube-system/aws-node env ENABLE_PREFIX_DELEGATION"
        tuning = ()
    elif objs.auto_mode_nodes:
        cni, version, routing, ipam, tuning = "aws-vpc-cni", "", "native", "eni", ()
        src["cni"] = "API: Nodes labelled eks.amazonaws.com/compute-type=auto (EKS Auto Mode)"
        notes.append("EKS Auto Mode: the VPC CNI and kube-proxy run as node processes EKS manages, "
                     "not as DaemonSets")
        kube_proxy = _kube_proxy(objs, kp_running, src) if kp_running else "unknown"
    else:
        cni, version, routing, ipam, tuning = "unknown", "", "unknown", "unknown", ()
        kube_proxy = _kube_proxy(objs, kp_running, src)
    return Fingerprint(cni=cni, cni_version=version, kube_proxy=kube_proxy, routing=routing, ipam=ipam,
                       tuning=tuning, source="kubernetes", notes=tuple(notes), sources=tuple(src.items()))


def _kube_proxy(objs: ClusterObjects, running: bool, src: dict[str, str]) -> str:
    if not running:
        src["kube_proxy"] = "API: no kube-proxy DaemonSet scheduled"
        return "none"
    data = (objs.kube_proxy_config or {}).get("data")
    mode = kube_proxy_mode(data)
    where = f"API: ConfigMap kube-system/{objs.kube_proxy_config_name}"
    explicit = any(isinstance(t, str) and re.search(r"^mode:\s*[\"']?[A-Za-z]+", t, re.M) for t in (data or {}).values())
    src["kube_proxy"] = where if explicit else f"default: iptables (mode unset in {where[5:]})"
    return mode


def with_node(objs: ClusterObjects | None, node: NodeDataPlane) -> Fingerprint:
    """The fingerprint of what this node runs: the API's objects (if any) with Cilium's effective
    configuration and kube-proxy's mode read from the processes taking precedence."""
    base = objs or ClusterObjects()
    if node.cilium_config is not None:
        base = replace(base, cilium_config={"data": dict(node.cilium_config)})
    fp = derive(base, cilium_from=node.cilium_source if node.cilium_config is not None else "")
    notes, src = list(fp.notes), dict(fp.sources)
    kube_proxy = fp.kube_proxy
    proxy_here = bool(node.kube_proxy_mode) and kube_proxy != "ebpf"
    if proxy_here:
        if kube_proxy not in ("unknown", "none", node.kube_proxy_mode) and objs is not None:
            notes.append(f"kube-proxy's configuration says {kube_proxy}, the running kube-proxy {node.kube_proxy_mode}")
        kube_proxy, src["kube_proxy"] = node.kube_proxy_mode, node.kube_proxy_source
    if objs is None:
        notes.append("no Kubernetes API: derived from the processes on this node")
    read_here = node.cilium_config is not None or proxy_here
    source = "node" if objs is None else ("kubernetes+node" if read_here else "kubernetes")
    return replace(fp, kube_proxy=kube_proxy, notes=tuple(notes), sources=tuple(src.items()), source=source)


CNI_PROCESSES = {
    "cilium-agent": "cilium",
    "aws-k8s-agent": "aws-vpc-cni",
    "calico-node": "calico",
    "flanneld": "flannel",
}


def from_node(facts: NodeFacts, node: NodeDataPlane | None = None) -> Fingerprint:
    """What can be told without the API: which CNI agent runs, whether kube-proxy's chains exist, and
    (with ``node``) Cilium's effective configuration and kube-proxy's mode from the processes."""
    if node is not None and (node.cilium_config is not None or node.kube_proxy_mode):
        fp = with_node(None, node)
        if node.cilium_config is None:
            cni = next((v for k, v in CNI_PROCESSES.items() if k in facts.processes), "none")
            fp = replace(fp, cni=cni, sources=(*((f, w) for f, w in fp.sources if f != "cni"),
                                                ("cni", "node: process names")))
        if fp.kube_proxy == "none" and ("kube-proxy" in facts.processes or facts.kube_services_chain):
            fp = replace(fp, kube_proxy="unknown")
        return fp
    cni = next((v for k, v in CNI_PROCESSES.items() if k in facts.processes), "none")
    if cni == "none" and facts.cilium_maps:
        cni = "cilium"
    if "kube-proxy" in facts.processes or facts.kube_services_chain:
        kube_proxy = "unknown"
    elif cni == "cilium":
        kube_proxy = "ebpf"
    else:
        kube_proxy = "none"
    return Fingerprint(cni=cni, kube_proxy=kube_proxy, source="node",
                       notes=("no Kubernetes API: derived from processes and rules on this node",),
                       sources=(("cni", "node: process names" + (" and cilium_* BPF maps" if facts.cilium_maps else "")),
                                ("kube_proxy", "node: kube-proxy process / KUBE-SERVICES chain")))
