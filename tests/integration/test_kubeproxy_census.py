"""kube-proxy-shaped rules loaded into real namespaces: the census counts exactly what was loaded,
with iptables-nft, iptables-legacy and native nft, and DNAT really takes a pod to an endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cniscope.agent.inspectors.iptables import census, in_netns
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.lab import kubeproxy as kp
from cniscope.lab import netns
from cniscope.lab.lab import Lab
from tests.waiting import wait_for

EPS = ["198.19.1.11", "198.19.2.11", "198.19.3.11"]


@pytest.fixture(scope="module")
def bare_ns() -> Iterator[str]:
    name = f"cnskp{os.getpid() % 100000}"
    netns.add(name)
    try:
        yield name
    finally:
        netns.delete(name)


def _census(ns: str) -> cap.IptablesDetail:
    path = str(netns.NETNS_DIR / ns)
    d = census(in_netns(path), metrics_address="off", netns_path=path).detail
    assert isinstance(d, cap.IptablesDetail)
    return d


def _backend(d: cap.IptablesDetail, name: str) -> cap.IptablesBackend:
    return d.iptables_nft if name == "iptables-nft" else d.iptables_legacy


@pytest.mark.netns
@pytest.mark.parametrize("backend", ["iptables-nft", "iptables-legacy"])
@pytest.mark.parametrize("n", [4, 104, 1000])
def test_census_counts_loaded_iptables_rules(bare_ns: str, backend: kp.Backend, n: int) -> None:
    other = "iptables-legacy" if backend == "iptables-nft" else "iptables-nft"
    loaded = kp.load(bare_ns, n, backend, endpoints=EPS)
    try:
        assert loaded.nat_rules == 8 + 10 * n
        d = _census(bare_ns)
        got = _backend(d, backend)
        nat = got.tables["nat"]
        assert nat.rules == loaded.nat_rules
        assert nat.user_chains == loaded.user_chains == 4 + 4 * n
        assert got.kube == cap.KubeChains(services_rules=n + 1, svc_chains=n, sep_chains=3 * n, ipvs=False)
        assert _backend(d, other).rules == 0
        assert d.kube_proxy.mode == "iptables"
        assert d.kube_proxy.backend == backend
        assert d.kube_proxy.nat_rules == 8 + 10 * n
        assert list(d.errors) == []
    finally:
        kp.flush(bare_ns, backend)
    assert _backend(_census(bare_ns), backend).rules == 0


@pytest.mark.netns
def test_census_counts_nft_verdict_map_and_incremental_add(bare_ns: str) -> None:
    kp.load(bare_ns, 104, "nft", endpoints=EPS)
    try:
        d = _census(bare_ns).nft
        assert d.kube_proxy == cap.NftKubeProxy(table="ip kube-proxy", rules=kp.nft_rule_count(104),
                                                service_chains=104, endpoint_chains=312, service_ips=104)
        kp.add_nft(bare_ns, kp.plan(20, EPS, first=104))
        d2 = _census(bare_ns)
        assert d2.nft.kube_proxy.service_ips == 124
        assert d2.nft.kube_proxy.rules == kp.nft_rule_count(124)
        assert d2.kube_proxy.mode == "nftables"
    finally:
        kp.flush(bare_ns, "nft")
    assert not _census(bare_ns).nft.HasField("kube_proxy")


@pytest.mark.netns
def test_load_refuses_addresses_outside_the_lab(bare_ns: str) -> None:
    with pytest.raises(ValueError, match="outside the lab range"):
        kp.load(bare_ns, 1, "iptables-nft", endpoints=["10.0.0.1", "10.0.0.2", "10.0.0.3"])


SERVER = r"""
import socket, sys, time
ip = sys.argv[1]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, 80)); s.listen(64); s.settimeout(60)
end = time.monotonic() + 60
while time.monotonic() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        break
    c.sendall(ip.encode()); c.close()
"""

CLIENT = r"""
import socket, sys
seen = []
for _ in range(int(sys.argv[2])):
    c = socket.create_connection((sys.argv[1], 80), timeout=3)
    seen.append(c.recv(64).decode()); c.close()
print(" ".join(seen))
"""


@pytest.mark.netns
@pytest.mark.parametrize("backend", ["iptables-nft", "nft"])
def test_pod_reaches_an_endpoint_through_its_cluster_ip(lab_factory: object, backend: kp.Backend) -> None:
    lab: Lab = lab_factory(nodes=3)  # type: ignore[operator]
    nodes = lab.nodes()
    pod_ips = [n.pod_ip for n in nodes]
    servers = [subprocess.Popen(netns.nsenter_argv(n.pod_netns, [sys.executable, "-c", SERVER, n.pod_ip]))
               for n in nodes]
    try:
        services = kp.plan(4, pod_ips)
        for n in nodes:  # kube-proxy programs every node
            kp.load(n.netns, services, backend)

        def listening() -> bool:
            for n, srv in zip(nodes, servers, strict=True):
                assert srv.poll() is None, f"the server in {n.pod_netns} exited ({srv.returncode})"
                if f"{n.pod_ip}:80 " not in netns.exec_in(n.pod_netns, ["ss", "-Hltn"]):
                    return False
            return True

        wait_for(listening, 20, "the three pod servers to listen on :80")
        svc = services[2]
        out = netns.exec_in(nodes[0].pod_netns, [sys.executable, "-c", CLIENT, svc.cluster_ip, "30"], timeout=60)
        answers = out.split()
        assert len(answers) == 30
        assert set(answers) <= set(svc.endpoints)
        assert len(set(answers)) >= 2, f"random split never left one endpoint: {answers}"
        # a ClusterIP nobody serves is refused or times out rather than answering
        bad = netns.exec_in(nodes[0].pod_netns, [sys.executable, "-c", CLIENT, "198.18.127.200", "1"],
                            check=False, timeout=20)
        assert bad.strip() == ""
    finally:
        for p in servers:
            p.kill()
            p.wait(timeout=5)
        for n in nodes:
            kp.flush(n.netns, backend)


def test_generated_iptables_text_is_stable() -> None:
    a = kp.render_iptables(kp.plan(3, EPS))
    assert a == kp.render_iptables(kp.plan(3, EPS))
    assert a.count("\n-A ") == kp.nat_rule_count(3)
