"""pod→Service (ClusterIP) probes through real kube-proxy-style DNAT rules in every node namespace,
and the O(n) cost of iptables-mode Services on connection setup."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from probe_helpers import run_probe, running_cluster  # type: ignore[import-not-found]

from cniscope.api.v1 import common_pb2
from cniscope.core import stats
from cniscope.lab import kubeproxy
from cniscope.lab.lab import Lab

pytestmark = [pytest.mark.netns]
ACCEPT_PORT = 7411  # the agents' accept-and-close port (AgentConfig.target_port)


@pytest.fixture(scope="module")
def svc_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_cluster(tmp_path_factory.mktemp("svc"), nodes=3) as lab:
        yield lab


def load_everywhere(lab: Lab, services: list[kubeproxy.Service]) -> None:
    for node in lab.nodes():
        kubeproxy.load(node.netns, services)


def connect(lab: Lab, cluster_ip: str, port: int, count: int) -> common_pb2.ProbeResult:
    r: common_pb2.ProbeResult
    r, _ = asyncio.run(run_probe(lab.local_collector, "connect", "node1", "", "service", cluster_ip,
                                 count=str(count), port=str(port)))
    return r


def test_tcp_to_a_cluster_ip_reaches_the_target_pod(svc_lab: Lab) -> None:
    node2 = svc_lab.nodes()[1]
    svc = kubeproxy.plan(1, [node2.pod_ip], per_service=1, port=5201, target_port=5201)
    load_everywhere(svc_lab, svc)
    r, _ = asyncio.run(run_probe(svc_lab.local_collector, "tcp", "node1", "node2", "service",
                                 svc[0].cluster_ip, duration="1"))
    assert r.ok, r.error
    assert r.target_address == svc[0].cluster_ip
    assert r.figures["received_gbps"] > 0.05


def test_connect_to_cluster_ip_is_slower_with_1000_services_than_with_4(svc_lab: Lab) -> None:
    pods = [n.pod_ip for n in svc_lab.nodes()]
    small = kubeproxy.plan(4, pods, target_port=ACCEPT_PORT)
    big = kubeproxy.plan(1000, pods, target_port=ACCEPT_PORT)
    # the probed Service is the last one in KUBE-SERVICES in both tables: its match walks the chain
    p50: dict[int, list[float]] = {4: [], 1000: []}
    for _ in range(3):  # alternate, so drift of the machine hits both sides alike
        for services in (small, big):
            load_everywhere(svc_lab, services)
            r = connect(svc_lab, services[-1].cluster_ip, 80, 600)
            assert r.ok, r.error
            assert r.figures["connected"] == 600, dict(r.figures)
            p50[len(services)].append(r.figures["p50_us"])
    m4, m1000 = stats.median(p50[4]), stats.median(p50[1000])
    print(f"connect p50 via ClusterIP: 4 services {m4:.1f} µs, 1000 services {m1000:.1f} µs")
    assert m1000 > m4, p50
