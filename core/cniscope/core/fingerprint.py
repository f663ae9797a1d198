"""The data-plane fingerprint of a cluster: CNI and version, kube-proxy mode, routing mode, IPAM and
tuning flags — derived as a pure function of the objects the API server holds (cilium-config, the
cilium / kube-proxy / aws-node DaemonSets, kube-proxy's configuration), or, without an API server
(the lab), of what the agent sees on its node.

``Fingerprint.scenario()`` names the benchmark scenario a fingerprint matches (A: VPC CNI;
B: Cilium + kube-proxy; C: kube-proxy-less; D: ENI native routing; E: ENI + tuning).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cniscope.api.v1 import capabilities_pb2

Obj = Mapping[str, Any]

# Cilium 1.16 chart defaults for the conntrack tables (bpf-ct-global-*-max when not overridden).
CT_TCP_DEFAULT = 524288
CT_ANY_DEFAULT = 262144

# The tuning items of scenario E, as flags.
E_TUNING = frozenset({"bpf-host-routing", "bandwidth-manager", "bbr", "bpf-masquerade", "socket-lb"})

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

    cilium_config: Obj | None = None      # ConfigMap kube-system/cilium-config
    cilium: Obj | None = None             # DaemonSet kube-system/cilium
    kube_proxy: Obj | None = None         # DaemonSet kube-system/kube-proxy
    kube_proxy_config: Obj | None = None  # ConfigMap kube-system/kube-proxy-config (EKS) or kube-proxy (kubeadm)
    aws_node: Obj | None = None           # DaemonSet kube-system/aws-node


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
    source: str = "kubernetes"    # kubernetes | node
    notes: tuple[str, ...] = field(default=(), compare=False)

    def scenario(self) -> str | None:
        t = set(self.tuning)
        if self.cni == "aws-vpc-cni" and self.kube_proxy == "iptables":
            return "A"
        if self.cni != "cilium":
            return None
        if self.kube_proxy == "iptables" and self.routing.startswith("tunnel"):
            return "B"
        if self.kube_proxy == "ebpf" and self.routing.startswith("tunnel") and not t & E_TUNING:
            return "C"
        if self.kube_proxy == "ebpf" and self.routing == "native" and self.ipam == "eni":
            if E_TUNING <= t:
                return "E"
            if not t & E_TUNING:
                return "D"
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tuning"], d["notes"] = list(self.tuning), list(self.notes)
        d["scenario"] = self.scenario()
        return d

    def to_proto(self) -> capabilities_pb2.DataPlaneFingerprint:
        return capabilities_pb2.DataPlaneFingerprint(
            cni=self.cni, cni_version=self.cni_version, kube_proxy=self.kube_proxy, routing=self.routing,
            ipam=self.ipam, tuning=self.tuning, source=self.source, notes=self.notes, scenario=self.scenario() or "")


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
    if cfg.get("bpf-lb-sock") == "true":
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


def derive(objs: ClusterObjects) -> Fingerprint:
    notes: list[str] = []
    cfg: Mapping[str, str] = (objs.cilium_config or {}).get("data") or {}
    cilium = objs.cilium_config is not None and (objs.cilium is None or _scheduled(objs.cilium))
    aws = _scheduled(objs.aws_node)
    kp_running = _scheduled(objs.kube_proxy)
    if cilium:
        chaining = cfg.get("cni-chaining-mode", "none")
        cni = "cilium" if chaining in ("none", "") else f"cilium+{chaining}"
        version = image_version(objs.cilium, "cilium-agent")
        if aws and chaining in ("none", ""):
            notes.append("aws-node is still scheduled next to Cilium")
        kpr = cfg.get("kube-proxy-replacement", "false") in ("true", "strict")
        if kpr:
            kube_proxy = "ebpf"
            if kp_running:
                notes.append("kube-proxy still runs although Cilium replaces it")
        else:
            kube_proxy = kube_proxy_mode((objs.kube_proxy_config or {}).get("data")) if kp_running else "none"
        mode = cfg.get("routing-mode") or ("native" if cfg.get("tunnel") == "disabled" else "tunnel")
        routing = "native" if mode == "native" else "tunnel-" + (cfg.get("tunnel-protocol") or cfg.get("tunnel") or "vxlan")
        ipam = cfg.get("ipam", "cluster-pool")
        tuning = tuple(_cilium_tuning(cfg, kpr))
    elif aws:
        cni = "aws-vpc-cni"
        version = image_version(objs.aws_node, "aws-node")
        kube_proxy = kube_proxy_mode((objs.kube_proxy_config or {}).get("data")) if kp_running else "none"
        routing = "native"
        ipam = "eni-prefix" if _env(objs.aws_node, "ENABLE_PREFIX_DELEGATION") == "true" else "eni-secondary-ip"
        tuning = ()
    else:
        cni, version, routing, ipam, tuning = "unknown", "", "unknown", "unknown", ()
        kube_proxy = kube_proxy_mode((objs.kube_proxy_config or {}).get("data")) if kp_running else "none"
    return Fingerprint(cni=cni, cni_version=version, kube_proxy=kube_proxy, routing=routing, ipam=ipam,
                       tuning=tuning, source="kubernetes", notes=tuple(notes))


CNI_PROCESSES = {
    "cilium-agent": "cilium",
    "aws-k8s-agent": "aws-vpc-cni",
    "calico-node": "calico",
    "flanneld": "flannel",
}


def from_node(facts: NodeFacts) -> Fingerprint:
    """What can be told without the API: which CNI agent runs, whether kube-proxy's chains exist."""
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
                       notes=("no Kubernetes API: derived from processes and rules on this node",))
