"""The probe allow-list of a cluster, discovered instead of configured.

Probes may always go to known agents and their probe pods (:mod:`cniscope.core.netpolicy`); the
allow-list adds the rest of the cluster's own address space, read from the API server's objects:

- nodes: every Node's ``InternalIP`` addresses;
- pods: every Node's ``spec.podCIDRs``, Cilium's cluster-pool CIDRs (cilium-config), kube-proxy's
  ``clusterCIDR`` (its KubeProxyConfiguration);
- services: the ``ServiceCIDR`` objects (networking.k8s.io/v1, GA in 1.33; v1beta1 where served),
  else kubeadm's ``networking.serviceSubnet`` (kube-system/kubeadm-config), else the range holding the
  ``kubernetes`` Service's ClusterIP (the range's first address): a provider's default range when the
  address is that range's first one (EKS 10.100.0.0/16 or 172.20.0.0/16, kubeadm 10.96.0.0/12, ...),
  else the /16 around it, said to be a guess.

A list configured in ``CNISCOPE_ALLOW_CIDRS`` wins over all of this. Pure functions over API objects
as JSON; fetching them is the caller's job.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.api.v1 import common_pb2

Obj = Mapping[str, Any]
Net = ipaddress.IPv4Network | ipaddress.IPv6Network

# Default Service ranges whose first address is the `kubernetes` Service's ClusterIP.
KNOWN_SERVICE_RANGES = (
    ("10.100.0.0/16", "EKS default"),
    ("172.20.0.0/16", "EKS default when the VPC uses 10.0.0.0/8"),
    ("10.96.0.0/12", "kubeadm default"),
    ("10.43.0.0/16", "k3s default"),
    ("10.0.0.0/16", "AKS default"),
    ("34.118.224.0/20", "GKE default"),
    ("fd00:10:96::/112", "kubeadm IPv6 example range"),
)


@dataclass(frozen=True)
class Cidr:
    cidr: str
    role: str        # nodes | pods | services | configured | lab
    source: str      # where it was read, e.g. "ServiceCIDR kubernetes (networking.k8s.io/v1)"


@dataclass(frozen=True)
class AllowList:
    origin: str                       # configured | discovered | default
    cidrs: tuple[Cidr, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    def spec(self) -> str:
        """The comma-separated form netpolicy.check_target takes."""
        return ",".join(c.cidr for c in self.cidrs)

    def role(self, role: str) -> list[str]:
        return [c.cidr for c in self.cidrs if c.role == role]

    def to_proto(self) -> cap.ProbeAllowList:
        return cap.ProbeAllowList(origin=self.origin, notes=list(self.notes),
                                  cidrs=[cap.AllowedCidr(cidr=c.cidr, role=c.role, source=c.source)
                                         for c in self.cidrs])


@dataclass(frozen=True)
class CidrObjects:
    """The API objects discovery reads (JSON dicts); None where the API answered 404 / not served."""

    nodes: Sequence[Obj] = ()
    service_cidrs: Sequence[Obj] | None = None      # items of a ServiceCIDRList
    service_cidr_api: str = ""                      # the group/version that served them
    kubernetes_service: Obj | None = None           # default/kubernetes
    kubeadm_config: Obj | None = None               # kube-system/kubeadm-config
    kube_proxy_config: Obj | None = None            # kube-proxy's ConfigMap
    cilium_config: Obj | None = None                # cilium-config
    notes: tuple[str, ...] = ()                     # what could not be read, and why


def _net(text: str) -> Net | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _collapse(nets: Iterable[Net]) -> list[Net]:
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


def node_addresses(nodes: Sequence[Obj]) -> list[Net]:
    out: list[Net] = []
    for n in nodes:
        for a in (n.get("status") or {}).get("addresses") or []:
            if a.get("type") == "InternalIP" and (net := _net(a.get("address", ""))) is not None:
                out.append(net)
    return _collapse(out)


def node_pod_cidrs(nodes: Sequence[Obj]) -> list[Net]:
    out: list[Net] = []
    for n in nodes:
        spec = n.get("spec") or {}
        for text in spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []):
            if (net := _net(text)) is not None:
                out.append(net)
    return _collapse(out)


def kube_proxy_cluster_cidrs(cm: Obj | None) -> list[Net]:
    """``clusterCIDR`` of the KubeProxyConfiguration in kube-proxy's ConfigMap (comma-separated)."""
    for text in ((cm or {}).get("data") or {}).values():
        if isinstance(text, str) and "KubeProxyConfiguration" in text:
            m = re.search(r"^clusterCIDR:\s*[\"']?([^\"'\n]*)[\"']?\s*$", text, re.MULTILINE)
            if m:
                return [n for s in m.group(1).split(",") if (n := _net(s)) is not None]
    return []


def cilium_pool_cidrs(cm: Obj | None) -> list[Net]:
    data = (cm or {}).get("data") or {}
    out: list[Net] = []
    for key in ("cluster-pool-ipv4-cidr", "cluster-pool-ipv6-cidr"):
        out += [n for s in re.split(r"[\s,]+", data.get(key, "")) if s and (n := _net(s)) is not None]
    return out


def kubeadm_service_subnets(cm: Obj | None) -> list[Net]:
    import yaml  # only where kubeadm-config is read: agents without a Kubernetes API never load it

    text = ((cm or {}).get("data") or {}).get("ClusterConfiguration", "")
    try:
        doc = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return []
    subnet = ((doc or {}).get("networking") or {}).get("serviceSubnet", "") if isinstance(doc, dict) else ""
    return [n for s in str(subnet).split(",") if s and (n := _net(s)) is not None]


def range_of_cluster_ip(ip_text: str) -> tuple[Net, str] | None:
    """The Service range the `kubernetes` Service's ClusterIP opens, and how sure that is."""
    try:
        ip = ipaddress.ip_address(ip_text)
    except ValueError:
        return None
    for text, what in KNOWN_SERVICE_RANGES:
        net = ipaddress.ip_network(text)
        if ip.version == net.version and int(ip) == int(net.network_address) + 1:
            return net, what
    prefix = 16 if ip.version == 4 else 112
    return ipaddress.ip_network(f"{ip}/{prefix}", strict=False), f"a guess: the /{prefix} around it"


def service_ranges(objs: CidrObjects) -> tuple[list[Cidr], list[str]]:
    notes: list[str] = []
    if objs.service_cidrs:
        out = []
        for sc in objs.service_cidrs:
            name = (sc.get("metadata") or {}).get("name", "")
            for text in (sc.get("spec") or {}).get("cidrs") or []:
                if (net := _net(text)) is not None:
                    out.append(Cidr(str(net), "services", f"ServiceCIDR {name} ({objs.service_cidr_api})"))
        if out:
            return out, notes
    subnets = kubeadm_service_subnets(objs.kubeadm_config)
    if subnets:
        return [Cidr(str(n), "services", "kube-system/kubeadm-config networking.serviceSubnet")
                for n in subnets], notes
    spec = (objs.kubernetes_service or {}).get("spec") or {}
    ips = list(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))
    out = []
    for ip in ips:
        found = range_of_cluster_ip(ip)
        if found is not None:
            net, what = found
            out.append(Cidr(str(net), "services", f"default/kubernetes ClusterIP {ip} ({what})"))
            if what.startswith("a guess"):
                notes.append(f"Service range guessed as {net} from the kubernetes Service's ClusterIP {ip}; "
                             "set CNISCOPE_ALLOW_CIDRS if your Service CIDR is wider")
    if not out:
        notes.append("no Service CIDR found (no ServiceCIDR API, no kubeadm-config, no kubernetes Service): "
                     "pod → Service probes need CNISCOPE_ALLOW_CIDRS")
    return out, notes


def discovered(objs: CidrObjects) -> AllowList:
    cidrs: list[Cidr] = []
    for net in node_addresses(objs.nodes):
        cidrs.append(Cidr(str(net), "nodes", f"InternalIP of {len(objs.nodes)} Node(s)"))
    pods: dict[str, str] = {}
    for net in node_pod_cidrs(objs.nodes):
        pods.setdefault(str(net), "Node spec.podCIDRs")
    for net in cilium_pool_cidrs(objs.cilium_config):
        pods.setdefault(str(net), "cilium-config cluster-pool CIDR")
    for net in kube_proxy_cluster_cidrs(objs.kube_proxy_config):
        pods.setdefault(str(net), "kube-proxy clusterCIDR")
    cidrs += [Cidr(c, "pods", src) for c, src in pods.items()]
    services, notes = service_ranges(objs)
    cidrs += services
    if not pods:
        notes.append("no pod CIDR found (the CNI hands out VPC/subnet addresses, e.g. aws-vpc-cni): "
                     "only the agents' probe pods are allowed as pod targets")
    return AllowList("discovered", tuple(cidrs), tuple([*objs.notes, *notes]))


def effective(configured: str | None, objs: CidrObjects | None, default: str) -> AllowList:
    """What the allow-list is: the configured one if set, else discovered from ``objs``, else ``default``."""
    if configured is not None:
        return AllowList("configured", tuple(Cidr(c.strip(), "configured", "CNISCOPE_ALLOW_CIDRS")
                                             for c in configured.split(",") if c.strip()))
    if objs is not None:
        return discovered(objs)
    return AllowList("default", tuple(Cidr(c, "lab", "built-in default (the lab's range)")
                                      for c in default.split(",") if c))


def with_reported(own: str, reports: Iterable[common_pb2.CapabilityReport],
                  env: Mapping[str, str] | None = None) -> str:
    """The collector's allow-list: ``CNISCOPE_ALLOW_CIDRS`` when set; else its own default plus every
    CIDR the connected agents enforce (each agent checks its own list again before a packet leaves)."""
    e = os.environ if env is None else env
    if "CNISCOPE_ALLOW_CIDRS" in e:
        return own
    seen = [c for c in own.split(",") if c]
    for report in reports:
        for unit in report.units:
            if unit.WhichOneof("detail") == "cluster":
                seen += [c.cidr for c in unit.cluster.allow_list.cidrs if c.cidr not in seen]
    return ",".join(seen)
