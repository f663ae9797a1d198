"""The published study as data: every figure has a source, the loader is strict, and a comparison of
the reference alone reproduces the report's headline deltas to its rounding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cniscope.api.v1 import runs_pb2
from cniscope.collector import reference
from cniscope.collector.runs.runs_service import build_comparison
from cniscope.core import benchmetrics as bm
from cniscope.core.errors import NotFound, ValidationError


def test_provenance_and_sources() -> None:
    doc = reference.raw()
    prov = doc["provenance"]
    assert "EKS 1.31" in prov["platform"]
    assert "m6i.xlarge" in prov["node_type"]
    assert prov["cilium"] == "1.16.5"
    assert "median" in prov["statistic"]
    for f in doc["figures"]:
        bm.parse_key(f["metric"])
        assert f["source"].strip(), f["metric"]
    assert set(doc["scenarios"]) == {"A", "B", "C", "D", "E"}


@pytest.mark.parametrize(("scenario", "key", "value"), [
    ("A", "tcp.gbps", 12.41), ("E", "tcp.gbps", 12.40), ("A", "udp.loss_pct", 20.39), ("E", "udp.loss_pct", 0.03),
    ("D", "udp.loss_pct", 20.42), ("A", "rtt.p50", 4894), ("E", "rtt.p50", 3135), ("C", "rtt.p50", 5092),
    ("A", "http@1000.p99", 10.92), ("D", "http@1000.p99", 8.75), ("A", "http@5000.p99", 440.45),
    ("E", "httpmax.qps", 4181.9), ("C", "dns.p99", 2), ("C", "cni.mem_mib", 129), ("B", "udp.gbps", 7.92),
])
def test_figures_as_published(scenario: str, key: str, value: float) -> None:
    by = {v.id: v for v in reference.scenarios()}
    assert by[f"report-2026-02:{scenario}"].figures[key].median == value


def test_not_measured_stays_missing() -> None:
    a = reference.parse_spec("report-2026-02:A")[0]
    assert "cni.cpu_m" not in a.figures
    assert "cni.mem_mib" not in a.figures


def test_range_figure_keeps_its_range() -> None:
    b = reference.parse_spec("report-2026-02:B")[0].figures["cni.cpu_m"]
    assert (b.lo, b.median, b.hi) == (4, 5, 6)


def test_spec_parsing() -> None:
    assert [v.id for v in reference.parse_spec("report-2026-02:a,E")] == ["report-2026-02:A", "report-2026-02:E"]
    assert len(reference.parse_spec("report-2026-02")) == 5
    with pytest.raises(ValidationError):
        reference.parse_spec("report-2026-02:F")
    with pytest.raises(NotFound):
        reference.parse_spec("report-1999")


@pytest.mark.parametrize(("name", "stated"), [
    ("RTT A→E", "-36%"), ("HTTP p99 @1000 A→D", "-20%"), ("RTT A→D", "-9%"), ("RTT D→E", "-30%"),
    ("UDP loss A→E", "20.39 → 0.03"),
])
def test_headlines_reproduced(name: str, stated: str) -> None:
    h = {x.name: x for x in reference.headlines()}[name]
    assert h.stated == stated or h.stated == f"{stated[0]}{stated[1:]}"
    assert h.reproduced, h.text()


def test_headline_rounding_is_checked_not_assumed() -> None:
    assert reference._round_like(-35.94, -36)
    assert not reference._round_like(-35.4, -36)
    assert not reference._round_like(35.94, -36)


def test_reference_alone_renders_the_tables_and_headlines() -> None:
    resp = build_comparison([], runs_pb2.CompareRequest(reference="report-2026-02", format="table"))
    out = resp.rendered
    for label in ("A: VPC CNI", "E: Cilium ENI + tuning", "D: Cilium ENI"):
        assert label in out
    for title in ("TCP throughput", "UDP loss", "RTT p50", "HTTP p99 @1,000 QPS", "max QPS", "DNS p99", "CNI memory"):
        assert title in out
    assert "4,894 µs → 3,135 µs (-36%; published -36%) reproduced" in out
    assert "10.92 ms → 8.75 ms (-20%; published -20%) reproduced" in out
    assert "20.39 % → 0.03 % (-100%; published 20.39 → 0.03) reproduced" in out
    assert "NOT reproduced" not in out
    data = json.loads(resp.json)
    assert data["baseline"] == "report-2026-02:A"
    rtt = next(r for t in data["tables"] for r in t["rows"] if r["metric"] == "rtt.p50")
    assert round(rtt["deltas"][4]["pct"]) == -36
    assert rtt["deltas"][4]["verdict"] == "better"


def test_reference_scenario_beside_a_run_and_a_gate() -> None:
    from cniscope.collector.reports.report_model import RunView

    mine = RunView("r1", "my cluster", {"rtt.p50": bm.FigureStat(3500, 3400, 3600, 3)})
    resp = build_comparison([mine], runs_pb2.CompareRequest(reference="report-2026-02:E", fail_if=["rtt.p50 > +10%"]))
    assert "E: Cilium ENI + tuning (published)" in resp.rendered
    assert "my cluster" in resp.rendered
    assert list(resp.failed) == ["rtt.p50 > +10%"]
    assert "rtt.p50" in resp.failures[0]
    assert "+11.6%" in resp.failures[0]


def test_scaling_table_published() -> None:
    s = reference.scaling()
    kp = {r["services"]: r for r in s["kube-proxy"]}
    assert kp[4]["nat_rules"] == 99
    assert kp[104]["nat_rules"] == 699
    assert kp[1000]["nat_rules"] == 10059
    assert kp[1000]["setup_mean_us"] - kp[4]["setup_mean_us"] == 26
    assert round((kp[1000]["setup_mean_us"] / kp[4]["setup_mean_us"] - 1) * 100) == 16
    assert int(kp[1000]["nat_rules"] / kp[4]["nat_rules"]) == 101


def test_dataset_file_is_packaged_next_to_the_loader() -> None:
    assert (Path(reference.__file__).parent / "report_2026_02.json").is_file()
