"""connect and http probes end to end against the agents' own targets (accept-and-close port,
HTTP echo) on host and pod paths, same-node pod→pod, and the bad-input list: refused port,
unreachable target, target outside the allow-list, parameter above its cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from probe_helpers import run_probe, running_cluster  # type: ignore[import-not-found]

from cniscope.api.v1 import common_pb2
from cniscope.lab import labdns
from cniscope.lab.lab import Lab

pytestmark = [pytest.mark.netns]


@pytest.fixture(scope="module")
def lab2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Two nodes with two pods each: the agent's probe pod is pod 1, pod 2 is a same-node neighbour."""
    with running_cluster(tmp_path_factory.mktemp("light"), nodes=2, pods_per_node=2) as lab:
        yield lab


def probe(lab: Lab, kind: str, src: str = "node1", dst: str = "node2", path: str = "host",
          target_address: str = "", **params: str) -> common_pb2.ProbeResult:
    r: common_pb2.ProbeResult
    r, _ = asyncio.run(run_probe(lab.local_collector, kind, src, dst, path, target_address, **params))
    return r


@pytest.mark.parametrize("path", ["host", "pod"])
def test_connect_end_to_end(lab2: Lab, path: str) -> None:
    r = probe(lab2, "connect", path=path, count="300")
    assert r.ok, r.error
    f = r.figures
    assert f["connected"] == 300, dict(f)
    assert f["errors"] == 0
    assert 0 < f["min_us"] <= f["p50_us"] <= f["p99_us"] <= f["max_us"]
    # sequential connects: the wall time holds every setup time, and all 300 began inside the 25 s budget
    assert 300 / 26 <= f["conn_per_s"] <= 1e6 / f["mean_us"] * 1.01, dict(f)


def test_connect_pod_to_pod_on_the_same_node(lab2: Lab) -> None:
    # node1's agent originates from its probe pod (pod1-1) to the neighbour pod1-2 on the same node;
    # the neighbour has no listener, so every connect is answered by a RST: refused, and fast
    neighbour = lab2.nodes()[0].pods[1]["ip"]
    r = probe(lab2, "connect", dst="", path="pod", target_address=neighbour, count="20", port="80")
    assert not r.ok
    assert r.figures["errors_refused"] == 20
    assert "refused" in r.error
    assert "p50_us" not in r.figures


def test_rtt_pod_to_pod_on_the_same_node(lab2: Lab) -> None:
    neighbour = lab2.nodes()[0].pods[1]["ip"]
    r = probe(lab2, "rtt", dst="", path="pod", target_address=neighbour, count="10", interval="0.02")
    assert r.ok, r.error
    assert r.figures["received"] == 10
    assert r.target_address == neighbour


def test_http_fixed_qps_200_for_5s(lab2: Lab) -> None:
    r = probe(lab2, "http", path="pod", qps="200", duration="5")
    assert r.ok, r.error
    f = r.figures
    assert f["requests"] == f["ok"] == 1000  # 200/s for 5 s, every one answered
    assert 100 <= f["actual_qps"] <= 201     # never above the offered rate; a busy host may lag behind it
    assert f["errors"] == 0
    assert 0 < f["p50_ms"] <= f["p90_ms"] <= f["p99_ms"] <= f["max_ms"]
    assert f["connections"] <= 8  # keepalive reuses connections


def test_http_connection_close_opens_one_connection_per_request(lab2: Lab) -> None:
    r = probe(lab2, "http", qps="100", duration="1", keepalive="false")
    assert r.ok, r.error
    assert r.figures["connections"] == r.figures["requests"] == 100


def test_unreachable_target_is_a_clear_failure(lab2: Lab) -> None:
    # inside the allow-list, on the fabric subnet, but nobody has that address
    r = probe(lab2, "connect", dst="", target_address="198.18.0.99", count="2", timeout="0.3", port="80")
    assert not r.ok
    kinds = {k for k in r.figures if k.startswith("errors_")}
    assert kinds & {"errors_timeout", "errors_unreachable"}
    assert "no connection to 198.18.0.99:80 succeeded" in r.error


def test_target_outside_the_allow_list_is_refused_before_any_packet(lab2: Lab) -> None:
    with pytest.raises(grpc.RpcError) as ei:
        probe(lab2, "connect", dst="", target_address="10.1.2.3", count="1")
    assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "allow-list" in (ei.value.details() or "")


def test_parameter_above_its_cap_is_refused(lab2: Lab) -> None:
    with pytest.raises(grpc.RpcError) as ei:
        probe(lab2, "http", qps="50000")
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "above the cap" in (ei.value.details() or "")
    # and the agents keep serving
    r = probe(lab2, "connect", count="5")
    assert r.ok, r.error


def test_dns_through_the_pods_resolver_answers(lab2: Lab) -> None:
    r = probe(lab2, "dns", dst="", path="pod", count="40")
    assert r.ok, r.error
    f = r.figures
    assert f["answered"] == 40
    assert f["failures"] == 0
    assert 0 < f["p50_ms"] <= f["p99_ms"]
    detail = json.loads(r.detail_json)
    assert detail["resolver_from"].endswith("/resolv.conf")
    assert r.target_address == labdns.KUBE_DNS_IP  # asked through the kube-dns ClusterIP (DNAT)


def test_dns_unknown_name_counts_nxdomain_failures_not_latency(lab2: Lab) -> None:
    r = probe(lab2, "dns", dst="", path="pod", count="15", name="nosuch.default.svc.cluster.local")
    assert not r.ok
    assert r.figures["failures_nxdomain"] == 15
    assert r.figures["answered"] == 0
    assert "p50_ms" not in r.figures
    assert "nxdomain" in r.error


def test_dns_explicit_resolver_from_the_host_path(lab2: Lab) -> None:
    r = probe(lab2, "dns", src="node2", dst="", count="10", name="node1.lab", resolver=labdns.DNS_IP)
    assert r.ok, r.error
    assert r.figures["answered"] == 10


def test_lab_dns_is_removed_by_down(lab_factory: object) -> None:
    lab: Lab = lab_factory(nodes=1)  # type: ignore[operator]
    lab.start_dns()
    rec = lab.record(labdns.ROLE)
    assert rec is not None
    conf = labdns.ETC_NETNS / lab.nodes()[0].pod_netns / "resolv.conf"
    assert conf.read_text().startswith(f"nameserver {labdns.KUBE_DNS_IP}")
    lab.down()
    assert not conf.exists()
    assert not Path(f"/proc/{rec.pid}").exists() or "dnsmasq" not in Path(f"/proc/{rec.pid}/cmdline").read_text()
