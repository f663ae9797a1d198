"""A run's fingerprint from what the agents report: CNI and version, kube-proxy mode and backend,
routing, IPAM, tuning flags, kernel, node type. A lab says so itself, with the datapath its pods reach
Services through ("lab: netns, iptables-nft"; "lab: netns, ebpf socket-lb" on the socket-LB datapath)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from cniscope.api.v1 import capabilities_pb2, cluster_pb2, common_pb2

FABRIC = ipaddress.ip_network("198.18.0.0/24")
LAB_PODS = ipaddress.ip_network("198.19.0.0/16")
BACKENDS = ("iptables-nft", "iptables-legacy")
SOCKET_LB = "ebpf socket-lb"


def _unit(rep: common_pb2.CapabilityReport, name: str, *, fresh: bool = False) -> common_pb2.UnitReport | None:
    """The unit's report when it ran and carries its findings; with ``fresh``, not when the report
    repeats it from an earlier collection (``unfinished.stale``)."""
    if fresh and rep.HasField("unfinished") and name in rep.unfinished.stale:
        return None
    for u in rep.units:
        if u.name == name and u.ok and u.available and u.WhichOneof("detail") == name:
            return u
    return None


def _census(rep: common_pb2.CapabilityReport, *, fresh: bool = False) -> capabilities_pb2.IptablesDetail | None:
    u = _unit(rep, "iptables", fresh=fresh)
    return u.iptables if u is not None else None


def _backend(d: capabilities_pb2.IptablesDetail, name: str) -> capabilities_pb2.IptablesBackend:
    return d.iptables_nft if name == "iptables-nft" else d.iptables_legacy


def is_lab(st: cluster_pb2.NodeState) -> bool:
    try:
        host = ipaddress.ip_address(st.host_ip)
        pod = ipaddress.ip_address(st.pod_ip) if st.pod_ip else None
    except ValueError:
        return False
    return host in FABRIC and (pod is None or pod in LAB_PODS)


def census_nat_rules(rep: common_pb2.CapabilityReport) -> tuple[float | None, str]:
    """NAT rules on a node from its iptables/nft census: (rules, backend)."""
    d = _census(rep)
    if d is None:
        return None, ""
    return _nat_rules(d)


def _nat_rules(d: capabilities_pb2.IptablesDetail) -> tuple[float | None, str]:
    if d.kube_proxy.HasField("nat_rules"):
        return float(d.kube_proxy.nat_rules), d.kube_proxy.backend
    best: tuple[float | None, str] = (None, "")
    for name in BACKENDS:
        b = _backend(d, name)
        if b.ran:  # the backend ran: no nat table means 0 rules
            n = float(b.tables["nat"].rules) if "nat" in b.tables else 0.0
            if best[0] is None or n > best[0]:
                best = (n, name)
    return best


def data_plane_counts(rep: common_pb2.CapabilityReport) -> dict[str, int]:
    """What one node's census counts of the Service data plane, by signal: ``nat_rules`` (kube-proxy's
    iptables mode, or the whole nat table where no kube-proxy chains exist), ``nft_rules`` (kube-proxy's
    nft table) and ``bpf_service_entries`` (Cilium's BPF service map). Only what the report carries;
    a unit the agent had not finished re-running (``unfinished.stale``) counts as not reported."""
    out: dict[str, int] = {}
    d = _census(rep, fresh=True)
    if d is not None:
        if d.kube_proxy.HasField("nat_rules"):
            out["nat_rules"] = d.kube_proxy.nat_rules
        if d.nft.HasField("kube_proxy"):
            out["nft_rules"] = d.nft.kube_proxy.rules
    b = _unit(rep, "bpf", fresh=True)
    if b is not None and "service" in b.bpf.cilium:
        out["bpf_service_entries"] = b.bpf.cilium["service"].entries
    if d is not None and not out:
        total, _ = _nat_rules(d)
        if total is not None:
            out["nat_rules"] = int(total)
    return out


def kube_proxy_sync(rep: common_pb2.CapabilityReport) -> tuple[float, float] | str:
    """kube-proxy's rule syncs since it started, from its own /metrics as the census read them:
    (syncs, seconds spent syncing), both cumulative; or why there is no such figure."""
    d = _census(rep, fresh=True)
    if d is None:
        return "no iptables census in the agent's report"
    if not d.kube_proxy.HasField("metrics"):
        return "kube-proxy metrics not read (CNISCOPE_KUBE_PROXY_METRICS=off)"
    m = d.kube_proxy.metrics
    if m.unavailable or m.error:
        return f"kube-proxy metrics: {m.unavailable or m.error}"
    if m.HasField("sync_seconds_total"):
        return m.syncs, m.sync_seconds_total
    if m.HasField("sync_mean_ms"):  # a report stored before the raw sum was kept
        return m.syncs, m.sync_mean_ms * m.syncs / 1000
    if not m.syncs:  # kube-proxy has not synced since it started
        return 0.0, 0.0
    return "kube-proxy metrics without kubeproxy_sync_proxy_rules_duration_seconds"


def socket_lb(rep: common_pb2.CapabilityReport) -> bool:
    """Cilium-style socket load balancing runs for this agent's own sockets: its census sees a
    ``connect4`` program attached to the agent's cgroup or one of its ancestors."""
    b = _unit(rep, "bpf")
    if b is None:
        return False
    own = set(b.bpf.own_cgroups)
    return any(a.hook == "cgroup" and "inet4_connect" in a.mode and a.cgroup in own
               for p in b.bpf.programs for a in p.attached)


def derive(nodes: Mapping[str, cluster_pb2.NodeState]) -> dict[str, str]:
    """One fingerprint for the nodes of a run; differing values across nodes are shown as mixed."""
    per: dict[str, dict[str, str]] = {}
    for name, st in sorted(nodes.items()):
        rep = st.capabilities
        cu = _unit(rep, "cluster")
        cluster = cu.cluster if cu is not None else capabilities_pb2.ClusterDetail()
        fp, meta = cluster.fingerprint, cluster.node
        census = _census(rep)
        kp = census.kube_proxy if census is not None else capabilities_pb2.KubeProxy()
        f: dict[str, str] = {}
        f["cni"] = (fp.cni or "unknown") + (f" {fp.cni_version}" if fp.cni_version else "")
        kube_proxy = fp.kube_proxy or "unknown"
        if kube_proxy in ("unknown", "none") and kp.mode not in ("", "none"):
            kube_proxy = f"{kp.mode} (rules seen)"
        f["kube_proxy"] = kube_proxy
        if kp.backend:
            f["kube_proxy_backend"] = kp.backend
        f["routing"] = fp.routing or "unknown"
        f["ipam"] = fp.ipam or "unknown"
        f["tuning"] = ", ".join(fp.tuning) or "none detected"
        f["kernel"] = rep.kernel or "unknown"
        if is_lab(st):
            backend = SOCKET_LB if socket_lb(rep) else f.get("kube_proxy_backend") or "iptables-nft"
            f["node_type"] = "lab"
            # a Kubernetes lab (lab up --kubernetes): its agents read the fingerprint from an API server
            api = ", Kubernetes API" if fp.source.startswith("kubernetes") else ""
            f["environment"] = f"lab: netns, {backend}{api}"
        else:
            f["node_type"] = meta.instance_type or "unknown"
            f["environment"] = "kubernetes" if fp.source == "kubernetes" else "node (no Kubernetes API)"
        ready = sorted(i.name for i in rep.items if i.state == common_pb2.READINESS_READY)
        if ready:
            f["kernel_ready"] = ", ".join(ready)
        per[name] = f
    if not per:
        return {"nodes": "0"}
    keys = list(dict.fromkeys(k for f in per.values() for k in f))
    out: dict[str, str] = {}
    for k in keys:
        vals = sorted({f.get(k, "") for f in per.values()})
        out[k] = vals[0] if len(vals) == 1 else "mixed: " + "; ".join(f"{n}={f.get(k, '')}" for n, f in per.items())
    out["nodes"] = str(len(per))
    return out
