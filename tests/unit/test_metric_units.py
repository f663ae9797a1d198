"""The /metrics exposition: base units (seconds, ratios, bytes, bits per second) whatever unit a sample
or probe figure carries in its name, and the census series taken from typed capability reports."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.api.v1 import common_pb2
from cniscope.core.capability_metrics import MAX_FILL_MAPS, capability_families
from cniscope.core.metric_units import base_unit
from cniscope.core.metricshttp import gauge_families


@pytest.mark.parametrize(("name", "exposed", "factor"), [
    ("cniscope_probe_rtt_p99_us", "cniscope_probe_rtt_p99_seconds", 1e-6),
    ("cniscope_agent_clock_offset_ms", "cniscope_agent_clock_offset_seconds", 1e-3),
    ("cniscope_probe_udp_loss_pct", "cniscope_probe_udp_loss_ratio", 1e-2),
    ("cniscope_probe_tcp_received_gbps", "cniscope_probe_tcp_received_bits_per_second", 1e9),
    ("cniscope_cni_cpu_millicores", "cniscope_cni_cpu_cores", 1e-3),
    ("cniscope_probe_connect_conn_per_s", "cniscope_probe_connect_conn_per_second", 1.0),
    ("cniscope_agent_rss_bytes", "cniscope_agent_rss_bytes", 1.0),
    ("cniscope_probe_rtt_transmitted", "cniscope_probe_rtt_transmitted", 1.0),
])
def test_base_unit_renames_and_scales(name: str, exposed: str, factor: float) -> None:
    assert base_unit(name) == (exposed, factor)


def test_gauge_families_expose_values_in_base_units() -> None:
    fams = gauge_families([("agent_clock_offset_ms", {"node": "n1"}, 250.0),
                           ("probe_rtt_p50_us", {"node": "n1", "target": "n2"}, 80.0)], "doc")
    got = {f.name: f.samples[0].value for f in fams}  # type: ignore[attr-defined]
    assert got == {"cniscope_agent_clock_offset_seconds": pytest.approx(0.25),
                   "cniscope_probe_rtt_p50_seconds": pytest.approx(80e-6)}


def _report() -> common_pb2.CapabilityReport:
    ipt = cap.IptablesDetail(
        iptables_nft=cap.IptablesBackend(ran=True, tables={"nat": cap.IptablesTable(rules=48),
                                                           "filter": cap.IptablesTable(rules=7)}),
        iptables_legacy=cap.IptablesBackend(ran=False, unavailable="no iptables-legacy"),
        nft=cap.NftCensus(ran=True, tables={
            "ip nat": cap.NftTable(family="ip", name="nat", rules=5, hooks={"pre": "nat prerouting -100"}),
            "inet fw": cap.NftTable(family="inet", name="fw", rules=9, hooks={"in": "filter input 0"})}),
        kube_proxy=cap.KubeProxy(mode="iptables", svc_chains=4, sep_chains=12),
    )
    maps = [cap.BpfMap(id=i, name=f"m{i:03d}", type="hash", max_entries=100, fill=i / 100) for i in range(100)]
    maps.append(cap.BpfMap(id=999, name="m099", type="hash", max_entries=100, fill=0.25))  # same name, less full
    maps.append(cap.BpfMap(id=1000, name="arr", type="array", max_entries=4))               # no fill: all slots exist
    bpf = cap.BpfDetail(maps=maps, programs=[cap.BpfProgram(id=1, name="p")])
    return common_pb2.CapabilityReport(units=[
        common_pb2.UnitReport(name="iptables", ok=True, available=True, duration_seconds=0.5, iptables=ipt),
        common_pb2.UnitReport(name="bpf", ok=True, available=True, duration_seconds=0.1, bpf=bpf),
        common_pb2.UnitReport(name="tracers", ok=False, available=False, error="unavailable: no bcc"),
    ])


def _samples(report: common_pb2.CapabilityReport) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in capability_families([("n1", report)]):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_census_counts_nat_rules_per_backend_and_kube_proxy_chains() -> None:
    got = _samples(_report())
    assert got["cniscope_nat_rules"] == {(("backend", "iptables-nft"), ("node", "n1")): 48,
                                         (("backend", "nft"), ("node", "n1")): 5}  # the nat-hooked table only
    assert got["cniscope_kube_proxy_service_chains"] == {(("mode", "iptables"), ("node", "n1")): 4}
    assert got["cniscope_kube_proxy_endpoint_chains"] == {(("mode", "iptables"), ("node", "n1")): 12}
    assert got["cniscope_unit_available"][(("node", "n1"), ("unit", "tracers"))] == 0
    assert got["cniscope_unit_duration_seconds"][(("node", "n1"), ("unit", "iptables"))] == 0.5


def test_map_fill_keeps_the_fullest_maps_only_one_series_per_name() -> None:
    got = _samples(_report())
    fill = {dict(k)["map"]: v for k, v in got["cniscope_bpf_map_fill_ratio"].items()}
    assert len(fill) == MAX_FILL_MAPS
    assert fill["m099"] == 0.99                      # the fuller of the two maps named m099
    assert min(fill.values()) == (100 - MAX_FILL_MAPS) / 100
    assert "arr" not in fill
    assert got["cniscope_bpf_maps"][(("node", "n1"),)] == 102
    assert got["cniscope_bpf_programs"][(("node", "n1"),)] == 1


def test_census_exposition_is_valid_text_format() -> None:
    class Source:
        def collect(self) -> list[Metric]:
            return capability_families([("n1", _report())])

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Source())
    text = generate_latest(reg).decode()
    assert 'cniscope_nat_rules{backend="iptables-nft",node="n1"} 48.0' in text
