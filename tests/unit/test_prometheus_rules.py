"""The Prometheus Operator overlay: promtool validates and unit-tests the PrometheusRule (every rule
and alert has a test), the monitors point at the ports the workloads name, the dashboard reads only
recorded or exported series, and METRICS.md is what the series catalog renders."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prometheus_kit as pk  # type: ignore[import-not-found]  # noqa: E402
from caps import missing  # type: ignore[import-not-found]  # noqa: E402
from kustomize import render  # type: ignore[import-not-found]  # noqa: E402

from cniscope.core.metrics_catalog import exposed_name, families, render_markdown  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ISSUE_RECORDS = {  # what the overlay promises: per-node and per-pair RTT, failures, spool, skew, footprint, census
    "pair:cniscope_rtt_p50_seconds:max", "pair:cniscope_rtt_p99_seconds:max", "node:cniscope_rtt_p50_seconds:median",
    "node:cniscope_rtt_p99_seconds:max", "node:cniscope_probe_failure:ratio10m", "node:cniscope_spool_bytes:max",
    "node:cniscope_spool_dropped:rate5m", "node:cniscope_clock_skew_seconds:abs", "node:cniscope_cni_cpu_cores:sum",
    "node:cniscope_cni_rss_bytes:sum", "node:cniscope_nat_rules:sum", "node:cniscope_bpf_map_fill:max",
}
ISSUE_ALERTS = {"CniscopeAgentDown", "CniscopeNodeNotReporting", "CniscopeSpoolDropping", "CniscopeClockSkew",
                "CniscopeBpfMapNearlyFull", "CniscopeRttP99Regressed"}


def _promtool() -> str:
    path = pk.binary("promtool")
    if path is None:
        missing("promtool not installed (Debian package prometheus; make setup)")
    return str(path)


def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = pk.write_rules(tmp_path)
    shutil.copy(pk.OVERLAY / "prometheus-rule.test.yaml", tmp_path)
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([promtool, "test", "rules", "prometheus-rule.test.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_the_rules_promised_exist_and_each_has_a_promtool_test() -> None:
    assert ISSUE_RECORDS <= set(pk.records())
    assert ISSUE_ALERTS <= set(pk.alerts())
    tests = yaml.safe_load((pk.OVERLAY / "prometheus-rule.test.yaml").read_text())["tests"]
    tested_exprs = " ".join(t["expr"] for g in tests for t in g.get("promql_expr_test", []))
    tested_alerts = {t["alertname"] for g in tests for t in g.get("alert_rule_test", []) if t["exp_alerts"]}
    recorded_and_used = set(pk.records())
    untested = {r for r in recorded_and_used if r not in tested_exprs and
                not any(r in expr for expr in pk.alerts().values())}  # an alert's test covers what it reads
    assert not untested, f"recording rules without a promtool test: {sorted(untested)}"
    assert set(pk.alerts()) <= tested_alerts, f"alerts never seen firing in a test: {set(pk.alerts()) - tested_alerts}"


def test_monitors_scrape_the_ports_the_workloads_name() -> None:
    docs = render(pk.OVERLAY)
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    pm = by_kind[("PodMonitor", "cniscope-agent")]["spec"]
    sm = by_kind[("ServiceMonitor", "cniscope-collector")]["spec"]
    agent = by_kind[("DaemonSet", "cniscope-agent")]["spec"]["template"]
    assert pm["selector"]["matchLabels"].items() <= agent["metadata"]["labels"].items()
    ports = {p["name"] for c in agent["spec"]["containers"] for p in c.get("ports", [])}
    assert pm["podMetricsEndpoints"][0]["port"] in ports
    svc = by_kind[("Service", "cniscope-collector")]
    assert sm["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    # the rules select job="cniscope-agent": the PodMonitor takes the job from that pod label
    assert agent["metadata"]["labels"][pm["jobLabel"]] == "cniscope-agent"
    assert ("PrometheusRule", "cniscope") in by_kind


def test_dashboard_and_rules_read_only_recorded_or_exported_series() -> None:
    known = set(pk.records()) | {exposed_name(f) for f in families()} | {"up"}
    known |= {exposed_name(f) + suffix for f in families() if f.type == "histogram"
              for suffix in ("_bucket", "_sum", "_count")}
    reads = [(f"record {n}", e) for n, e in pk.records().items()] + [(f"alert {n}", e) for n, e in pk.alerts().items()]
    reads += pk.dashboard_queries()
    unknown = {where: sorted(pk.series_names(e) - known) for where, e in reads if pk.series_names(e) - known}
    assert not unknown, f"queries reading series nobody records or exports: {unknown}"
    assert len(pk.dashboard_queries()) >= 20


def test_dashboard_has_the_panels_the_issue_names() -> None:
    titles = " ".join(p["title"].lower() for p in pk.dashboard()["panels"])
    for want in ("nodes", "pair rtt", "probe", "cni", "census", "spool", "clock"):
        assert want in titles, want
    heat = [p for p in pk.dashboard()["panels"] if p["type"] == "heatmap"]
    assert heat
    assert "pair:cniscope_rtt" in heat[0]["targets"][0]["expr"]


def test_metrics_md_is_rendered_from_the_catalog() -> None:
    current = (ROOT / "METRICS.md").read_text()
    assert current == render_markdown(), "METRICS.md is stale: python -m cniscope.core.metrics_catalog > METRICS.md"
    for f in families():
        assert re.search(rf"`{re.escape(exposed_name(f))}`", current), f.name


@pytest.mark.parametrize("name", ["cniscope_probe_rtt_p99_seconds", "cniscope_node_clock_skew_seconds",
                                  "cniscope_agent_clock_offset_seconds", "cniscope_nat_rules"])
def test_catalog_names_are_in_base_units(name: str) -> None:
    assert name in {f.name for f in families()}
    assert not any(re.search(r"_(ms|us|pct|gbps|mbps|millicores)(_|$)", f.name) for f in families())
