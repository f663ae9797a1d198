"""Debian's Prometheus scraping a 3-node lab: the shipped recording rules, alert expressions and
dashboard queries all return series from live agents and a live collector, and both /metrics
endpoints pass ``promtool check metrics``.

Prometheus runs inside the lab's fabric namespace (where agents' and collector's metrics addresses are
reachable; the lab has no link to the host), on 127.0.0.1 of that namespace with a temporary TSDB; the
test reaches its HTTP API from a thread that enters the namespace. The rule groups' interval is
shortened to the scrape interval so nothing waits 30 s. What the lab must hold for every series to
exist is made real here: kube-proxy-shaped NAT rules in every node namespace, a BPF hash map 95 % full,
and a process named kube-proxy (``sleep`` under that name) standing in for a CNI agent whose CPU and
memory the footprint sampler measures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prometheus_kit as pk  # type: ignore[import-not-found]  # noqa: E402
from caps import missing  # type: ignore[import-not-found]  # noqa: E402
from conftest import new_lab_name, wait_connected  # type: ignore[import-not-found]  # noqa: E402

from cniscope.agent import nsthread  # noqa: E402
from cniscope.agent.bpf import syscall as sc  # noqa: E402
from cniscope.core.metrics_catalog import exposed_name, families  # noqa: E402
from cniscope.lab import kubeproxy  # noqa: E402
from cniscope.lab.addressing import COLLECTOR_IP  # noqa: E402
from cniscope.lab.lab import Lab, LabSpec  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.bpf, pytest.mark.slow]

AGENT_PORT, COLLECTOR_PORT, PROM = 9471, 9470, "127.0.0.1:9090"
SCRAPE = 2  # seconds
FULL_MAP = "cnstest_fill"          # BPF_MAP_TYPE_HASH, 64 slots, 61 entries: 95 % > the alert's 90 %
FULL_MAX, FULL_ENTRIES = 64, 61

# Alerts that stay quiet on a healthy lab are evaluated with the threshold the test sets: each
# (fragment of the shipped expression, replacement) must occur in it, so the rule under test is the
# shipped one with only its threshold moved. CniscopeBpfMapNearlyFull needs none: the map above fires it.
ALERT_FORMS: dict[str, list[tuple[str, str]]] = {
    "CniscopeAgentDown": [("== 0", ">= 0")],                       # every agent's `up`
    "CniscopeNodeNotReporting": [("> 120", "> -60")],              # seconds since each node was last heard
    "CniscopeSpoolDropping": [("> 0", ">= 0")],                    # each node's drop rate (0 here)
    "CniscopeClockSkew": [("> 0.05", ">= 0")],                     # each node's |skew|
    "CniscopeRttP99Regressed": [("> 2 *", "> 0 *"), ("> 0.001", "> -1")],  # each pair against its median
    "CniscopeBpfMapNearlyFull": [],
}


def _prometheus_api(lab: Lab, path: str, **params: str) -> Any:
    url = f"http://{PROM}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")

    def get() -> Any:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - the lab's own loopback
            return json.loads(resp.read())

    body = nsthread.call_in(f"/run/netns/{lab.fabric}", get)
    assert body["status"] == "success", body
    return body["data"]


def _query(lab: Lab, expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = _prometheus_api(lab, "/api/v1/query", query=expr)["result"]
    return result


def _scrape_text(lab: Lab, address: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:  # noqa: S310
            return str(resp.read().decode())

    return nsthread.call_in(f"/run/netns/{lab.fabric}", get)


def _wait_all_return_series(lab: Lab, queries: dict[str, str], timeout: float) -> dict[str, list[Any]]:
    """Poll until every query returns at least one series; on timeout fail naming the empty ones."""
    deadline = time.monotonic() + timeout
    while True:
        results = {what: _query(lab, expr) for what, expr in queries.items()}
        empty = sorted(what for what, r in results.items() if not r)
        if not empty:
            return results
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g}s these return no series: " +
                                 "; ".join(f"{w} = {queries[w]}" for w in empty))
        time.sleep(SCRAPE)


@pytest.fixture(scope="module")
def binaries() -> dict[str, str]:
    found = {name: pk.binary(name) for name in ("prometheus", "promtool")}
    for name, path in found.items():
        if path is None:
            missing(f"{name} not installed (Debian package prometheus; make setup)")
    return {k: str(v) for k, v in found.items()}


@pytest.fixture(scope="module")
def full_map() -> Iterator[str]:
    fd = sc.map_create(1, 4, 8, FULL_MAX, FULL_MAP)  # held open: the map lives as long as this test
    try:
        for i in range(FULL_ENTRIES):
            sc.map_update(fd.fd, i.to_bytes(4, "little"), bytes(8))
        yield FULL_MAP
    finally:
        fd.close()


@pytest.fixture(scope="module")
def scraped_lab(tmp_path_factory: pytest.TempPathFactory, binaries: dict[str, str], full_map: str) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("promlab")
    lab = Lab(LabSpec(name=new_lab_name(), nodes=3), state_root=root / "labs")
    try:
        lab.up()
        pods = [n.pod_ip for n in lab.nodes()]
        for node in lab.nodes():
            kubeproxy.load(node.netns, 4, "iptables-nft", endpoints=pods)
        standin = root / "bin" / "kube-proxy"
        standin.parent.mkdir()
        standin.symlink_to("/bin/sleep")
        lab.spawn("cni-standin", None, [str(standin), "3600"])
        lab.start_cluster(db=root / "c.db", sample_interval=1.0,
                          extra_agent_args=["--metrics-listen", f"0.0.0.0:{AGENT_PORT}", "--mesh-interval", "2"],
                          extra_collector_args=["--metrics-listen", f"{COLLECTOR_IP}:{COLLECTOR_PORT}"])
        wait_connected(lab, 3, timeout=60)
        _start_prometheus(lab, root, binaries["prometheus"])
        yield lab
    finally:
        lab.down()


def _start_prometheus(lab: Lab, root: Path, binary: str) -> None:
    rules = pk.write_rules(root)
    groups = yaml.safe_load(rules.read_text())
    for g in groups["groups"]:
        g["interval"] = f"{SCRAPE}s"
    rules.write_text(yaml.safe_dump(groups, sort_keys=False))
    agents = [{"targets": [f"{n.host_ip}:{AGENT_PORT}"], "labels": {"node": n.name}} for n in lab.nodes()]
    config = {
        "global": {"scrape_interval": f"{SCRAPE}s", "evaluation_interval": f"{SCRAPE}s", "scrape_timeout": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [  # as the PodMonitor and ServiceMonitor make them: job names, node, honor_labels
            {"job_name": "cniscope-agent", "honor_labels": True, "static_configs": agents},
            {"job_name": "cniscope-collector", "honor_labels": True,
             "static_configs": [{"targets": [f"{COLLECTOR_IP}:{COLLECTOR_PORT}"]}]},
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    lab.spawn("prometheus", lab.fabric, [binary, f"--config.file={root / 'prometheus.yml'}",
                                         f"--storage.tsdb.path={root / 'tsdb'}", f"--web.listen-address={PROM}",
                                         "--log.level=warn"])
    deadline = time.monotonic() + 60
    while True:  # every target scraped twice, and up
        try:
            counts = _query(lab, "count_over_time(up[10m]) >= 2 and up == 1")
        except OSError:
            counts = []
        if len(counts) == 4:
            return
        if time.monotonic() > deadline:
            log = Path(lab.status()["state_dir"]) / "logs" / "prometheus.log"
            raise AssertionError(f"targets not scraped twice within 60s: {counts}\n{log.read_text()[-2000:]}")
        time.sleep(0.5)


def test_promtool_lints_both_live_endpoints_clean(scraped_lab: Lab, binaries: dict[str, str]) -> None:
    node1 = scraped_lab.nodes()[0]
    for who, address in (("agent", f"{node1.host_ip}:{AGENT_PORT}"), ("collector", f"{COLLECTOR_IP}:{COLLECTOR_PORT}")):
        text = _scrape_text(scraped_lab, address)
        assert "cniscope_" in text
        lint = subprocess.run([binaries["promtool"], "check", "metrics"], input=text, capture_output=True, text=True,
                              timeout=60)
        assert lint.returncode == 0, f"{who}: {lint.stdout}{lint.stderr}"
        assert not (lint.stdout + lint.stderr).strip(), f"{who}: {lint.stdout}{lint.stderr}"


def test_every_exposed_family_is_in_metrics_md(scraped_lab: Lab) -> None:
    documented = {exposed_name(f) for f in families()}
    node1 = scraped_lab.nodes()[0]
    for address in (f"{node1.host_ip}:{AGENT_PORT}", f"{COLLECTOR_IP}:{COLLECTOR_PORT}"):
        exposed = {line.split()[2] for line in _scrape_text(scraped_lab, address).splitlines()
                   if line.startswith("# TYPE ")}
        exposed = {n + "_total" if f"{n}_total" in documented else n for n in exposed}
        assert exposed - documented == set(), f"{address} exposes families METRICS.md does not list"


def test_every_rule_alert_and_dashboard_query_returns_series(scraped_lab: Lab) -> None:
    lab = scraped_lab
    groups = _prometheus_api(lab, "/api/v1/rules")["groups"]
    loaded = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in loaded} == set(pk.records()) | set(pk.alerts())
    shipped = pk.alerts()
    assert set(ALERT_FORMS) == set(shipped), "every alert needs its evaluation form here"
    queries: dict[str, str] = {}
    for name, expr in pk.records().items():
        queries[f"record {name}"] = name                    # what Prometheus recorded
        queries[f"record {name} (expr)"] = expr             # and the expression itself, now
    for name, forms in ALERT_FORMS.items():
        expr = shipped[name]
        for fragment, replacement in forms:
            assert fragment in expr, (name, fragment)
            expr = expr.replace(fragment, replacement, 1)
        queries[f"alert {name}"] = expr
    for where, expr in pk.dashboard_queries():
        queries[f"panel {where}"] = expr
    results = _wait_all_return_series(lab, queries, timeout=120)

    nodes = {n.name for n in lab.nodes()}
    for name in ("node:cniscope_rtt_p99_seconds:max", "node:cniscope_cni_rss_bytes:sum", "node:cniscope_nat_rules:sum",
                 "node:cniscope_clock_skew_seconds:abs"):
        assert {r["metric"]["node"] for r in results[f"record {name}"]} == nodes, name
    nat = {r["metric"]["node"]: float(r["value"][1]) for r in results["record node:cniscope_nat_rules:sum"]}
    assert all(v >= kubeproxy.nat_rule_count(4) for v in nat.values()), nat  # 48 of kube-proxy's, at least
    rtt = [float(r["value"][1]) for r in results["record pair:cniscope_rtt_p99_seconds:max"]]
    assert all(0 < v < 1 for v in rtt), rtt                                   # seconds, not microseconds
    firing = results["alert CniscopeBpfMapNearlyFull"]
    assert {(r["metric"]["map"], round(float(r["value"][1]), 3)) for r in firing} >= \
        {(FULL_MAP, round(FULL_ENTRIES / FULL_MAX, 3))}
    pending = _query(lab, f'ALERTS{{alertname="CniscopeBpfMapNearlyFull",map="{FULL_MAP}"}}')
    assert pending, "Prometheus's own evaluation does not hold the map alert (pending for its 15 minutes)"
    health = {r["name"]: (r["health"], r.get("lastError", "")) for r in
              (r for g in _prometheus_api(lab, "/api/v1/rules")["groups"] for r in g["rules"])}
    assert all(h == "ok" for h, _ in health.values()), health
