"""A run's fingerprint from what the agents report: CNI and version, kube-proxy mode and backend,
routing, IPAM, tuning flags, kernel, node type. A lab says so itself ("lab: netns, iptables-nft")."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from cniscope.api.v1 import cluster_pb2, common_pb2

FABRIC = ipaddress.ip_network("198.18.0.0/24")
LAB_PODS = ipaddress.ip_network("198.19.0.0/16")


def _unit(rep: common_pb2.CapabilityReport, name: str) -> dict[str, Any]:
    for u in rep.units:
        if u.name == name and u.ok and u.available and u.detail_json:
            try:
                d = json.loads(u.detail_json)
            except ValueError:
                return {}
            return d if isinstance(d, dict) else {}
    return {}


def is_lab(st: cluster_pb2.NodeState) -> bool:
    try:
        host = ipaddress.ip_address(st.host_ip)
        pod = ipaddress.ip_address(st.pod_ip) if st.pod_ip else None
    except ValueError:
        return False
    return host in FABRIC and (pod is None or pod in LAB_PODS)


def census_nat_rules(rep: common_pb2.CapabilityReport) -> tuple[float | None, str]:
    """NAT rules on a node from its iptables/nft census: (rules, backend)."""
    d = _unit(rep, "iptables")
    if not d:
        return None, ""
    kp = d.get("kube_proxy") or {}
    if isinstance(kp, dict) and kp.get("nat_rules") is not None:
        return float(kp["nat_rules"]), str(kp.get("backend", ""))
    best: tuple[float | None, str] = (None, "")
    for b in ("iptables-nft", "iptables-legacy"):
        r = d.get(b)
        if isinstance(r, dict) and "tables" in r:  # the backend ran: no nat table means 0 rules
            n = (r["tables"].get("nat") or {}).get("rules", 0)
            if isinstance(n, int | float) and (best[0] is None or n > best[0]):
                best = (float(n), b)
    return best


def data_plane_counts(rep: common_pb2.CapabilityReport) -> dict[str, int]:
    """What one node's census counts of the Service data plane, by signal: ``nat_rules`` (kube-proxy's
    iptables mode, or the whole nat table where no kube-proxy chains exist), ``nft_rules`` (kube-proxy's
    nft table) and ``bpf_service_entries`` (Cilium's BPF service map). Only what the report carries;
    a unit the agent had not finished re-running (``unfinished.stale``) counts as not reported."""
    stale = set(rep.unfinished.stale) if rep.HasField("unfinished") else set()
    out: dict[str, int] = {}
    d = {} if "iptables" in stale else _unit(rep, "iptables")
    kp = d.get("kube_proxy") or {}
    if isinstance(kp, dict) and isinstance(kp.get("nat_rules"), int | float):
        out["nat_rules"] = int(kp["nat_rules"])
    nft = d.get("nft") or {}
    nkp = nft.get("kube_proxy") if isinstance(nft, dict) else None
    if isinstance(nkp, dict) and isinstance(nkp.get("rules"), int | float):
        out["nft_rules"] = int(nkp["rules"])
    b = {} if "bpf" in stale else _unit(rep, "bpf")
    svc = (b.get("cilium") or {}).get("service") if isinstance(b.get("cilium"), dict) else None
    if isinstance(svc, dict) and isinstance(svc.get("entries"), int | float):
        out["bpf_service_entries"] = int(svc["entries"])
    if d and not out:
        total, _ = census_nat_rules(rep)
        if total is not None:
            out["nat_rules"] = int(total)
    return out


def kube_proxy_sync(rep: common_pb2.CapabilityReport) -> tuple[float, float] | str:
    """kube-proxy's rule syncs since it started, from its own /metrics as the census read them:
    (syncs, seconds spent syncing), both cumulative; or why there is no such figure."""
    stale = set(rep.unfinished.stale) if rep.HasField("unfinished") else set()
    d = {} if "iptables" in stale else _unit(rep, "iptables")
    if not d:
        return "no iptables census in the agent's report"
    kp = d.get("kube_proxy") or {}
    m = kp.get("metrics") if isinstance(kp, dict) else None
    if not isinstance(m, dict):
        return "kube-proxy metrics not read (CNISCOPE_KUBE_PROXY_METRICS=off)"
    if "unavailable" in m or "error" in m:
        return f"kube-proxy metrics: {m.get('unavailable') or m.get('error')}"
    syncs = m.get("syncs", 0)
    total = m.get("sync_seconds_total")
    if total is None and isinstance(m.get("sync_mean_ms"), int | float):  # an agent from before the raw sum
        total = m["sync_mean_ms"] * syncs / 1000
    elif total is None and not syncs:  # kube-proxy has not synced since it started
        total = 0.0
    if not isinstance(syncs, int | float) or not isinstance(total, int | float):
        return "kube-proxy metrics without kubeproxy_sync_proxy_rules_duration_seconds"
    return float(syncs), float(total)


def derive(nodes: Mapping[str, cluster_pb2.NodeState]) -> dict[str, str]:
    """One fingerprint for the nodes of a run; differing values across nodes are shown as mixed."""
    per: dict[str, dict[str, str]] = {}
    for name, st in sorted(nodes.items()):
        rep = st.capabilities
        fp = _unit(rep, "cluster").get("fingerprint") or {}
        meta = _unit(rep, "cluster").get("node") or {}
        census = _unit(rep, "iptables")
        kp = (census.get("kube_proxy") or {}) if census else {}
        f: dict[str, str] = {}
        cni = str(fp.get("cni", "unknown"))
        f["cni"] = cni + (f" {fp['cni_version']}" if fp.get("cni_version") else "")
        kube_proxy = str(fp.get("kube_proxy", "unknown"))
        if kube_proxy in ("unknown", "none") and isinstance(kp, dict) and kp.get("mode") not in (None, "none"):
            kube_proxy = f"{kp['mode']} (rules seen)"
        f["kube_proxy"] = kube_proxy
        if isinstance(kp, dict) and kp.get("backend"):
            f["kube_proxy_backend"] = str(kp["backend"])
        f["routing"] = str(fp.get("routing", "unknown"))
        f["ipam"] = str(fp.get("ipam", "unknown"))
        f["tuning"] = ", ".join(fp.get("tuning") or []) or "none detected"
        f["kernel"] = rep.kernel or "unknown"
        if is_lab(st):
            backend = f.get("kube_proxy_backend") or "iptables-nft"
            f["node_type"] = "lab"
            f["environment"] = f"lab: netns, {backend}"
        else:
            f["node_type"] = str(meta.get("instance_type") or "unknown")
            f["environment"] = "kubernetes" if fp.get("source") == "kubernetes" else "node (no Kubernetes API)"
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
