"""Prometheus series from capability reports, shared by the agent's and the collector's ``/metrics``:
each inspection unit's duration, success and availability, and the census a fleet dashboard needs —
NAT rules per backend, kube-proxy's chains, BPF maps and programs, and the fill of the fullest maps.

Cardinality is bounded per node: one series per unit, per iptables backend and per map name of the
:data:`MAX_FILL_MAPS` fullest maps (a map name repeats when a program is loaded twice: the fullest counts).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from cniscope.api.v1 import capabilities_pb2, common_pb2

MAX_FILL_MAPS = 64

UNIT_SERIES = (
    ("cniscope_unit_duration_seconds", "how long the inspection unit took"),
    ("cniscope_unit_success", "1 when the inspection unit succeeded"),
    ("cniscope_unit_available", "1 when the inspection unit applies on this node"),
)
CENSUS_SERIES = (
    ("cniscope_nat_rules", "rules in the nat table of each iptables backend, and nat-hooked rules of native nft",
     ("node", "backend")),
    ("cniscope_kube_proxy_service_chains", "kube-proxy's per-Service chains (KUBE-SVC-* or nft service chains)",
     ("node", "mode")),
    ("cniscope_kube_proxy_endpoint_chains", "kube-proxy's per-endpoint chains (KUBE-SEP-* or nft endpoint chains)",
     ("node", "mode")),
    ("cniscope_bpf_maps", "BPF maps loaded on the node", ("node",)),
    ("cniscope_bpf_programs", "BPF programs loaded on the node", ("node",)),
    ("cniscope_bpf_map_fill_ratio", f"live entries / max entries of the {MAX_FILL_MAPS} fullest countable maps",
     ("node", "map")),
)


def capability_families(reports: Iterable[tuple[str, common_pb2.CapabilityReport]]) -> list[Metric]:
    """(node, report) pairs → the unit and census gauge families, one series per node and key."""
    units = [GaugeMetricFamily(n, doc, labels=["node", "unit"]) for n, doc in UNIT_SERIES]
    census = {n: GaugeMetricFamily(n, doc, labels=list(labels)) for n, doc, labels in CENSUS_SERIES}
    for node, report in reports:
        for u in report.units:
            units[0].add_metric([node, u.name], u.duration_seconds)
            units[1].add_metric([node, u.name], 1.0 if u.ok else 0.0)
            units[2].add_metric([node, u.name], 1.0 if u.available else 0.0)
            case = u.WhichOneof("detail")
            if case == "iptables":
                _iptables(census, node, u.iptables)
            elif case == "bpf":
                _bpf(census, node, u.bpf)
    return [*units, *census.values()]


def _iptables(fams: dict[str, GaugeMetricFamily], node: str, d: capabilities_pb2.IptablesDetail) -> None:
    for backend, b in (("iptables-legacy", d.iptables_legacy), ("iptables-nft", d.iptables_nft)):
        if b.ran and "nat" in b.tables:
            fams["cniscope_nat_rules"].add_metric([node, backend], b.tables["nat"].rules)
    if d.nft.ran:
        nat = sum(t.rules for t in d.nft.tables.values() if any(h.startswith("nat ") for h in t.hooks.values()))
        fams["cniscope_nat_rules"].add_metric([node, "nft"], nat)
    kp = d.kube_proxy
    if kp.mode and kp.mode != "none":
        services, endpoints = kp.svc_chains, kp.sep_chains
        if kp.mode == "nftables" and d.nft.HasField("kube_proxy"):
            services, endpoints = d.nft.kube_proxy.service_chains, d.nft.kube_proxy.endpoint_chains
        fams["cniscope_kube_proxy_service_chains"].add_metric([node, kp.mode], services)
        fams["cniscope_kube_proxy_endpoint_chains"].add_metric([node, kp.mode], endpoints)


def _bpf(fams: dict[str, GaugeMetricFamily], node: str, d: capabilities_pb2.BpfDetail) -> None:
    fams["cniscope_bpf_maps"].add_metric([node], len(d.maps))
    fams["cniscope_bpf_programs"].add_metric([node], len(d.programs))
    fullest: dict[str, float] = {}
    for m in d.maps:
        if m.HasField("fill") and m.name:
            fullest[m.name] = max(m.fill, fullest.get(m.name, 0.0))
    for name, fill in sorted(fullest.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_FILL_MAPS]:
        fams["cniscope_bpf_map_fill_ratio"].add_metric([node, name], fill)
