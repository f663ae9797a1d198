"""bcc tracers against a known workload in a lab: exact connect counts, refused connects as
failures, SYN retransmits, drops by reason — and nothing from other namespaces."""

from __future__ import annotations

import errno
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from cniscope.agent.netlink import in_netns
from cniscope.agent.samplers.tracer_counters import TracerSampler, TracerSettings
from cniscope.agent.tracers.drops import Drops
from cniscope.agent.tracers.retrans import Retrans
from cniscope.agent.tracers.tcpconnlat import TcpConnLat
from cniscope.lab.lab import Lab

pytestmark = [pytest.mark.bcc, pytest.mark.netns]


def ns(name: str) -> str:
    return f"/run/netns/{name}"


class Listener:
    """A TCP accept loop on a port inside a namespace; bounded, stopped by close()."""

    def __init__(self, netns: str | None, ip: str) -> None:
        with in_netns(netns):
            self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, 0))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            c.close()

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        self.sock.close()


def connect(netns: str | None, ip: str, port: int, timeout: float = 3.0, syncnt: int | None = None) -> int:
    """One TCP connect+close from ``netns``; returns 0 or the errno."""
    with in_netns(netns):
        s = socket.socket()
    try:
        if syncnt is not None:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, syncnt)
        s.settimeout(timeout)
        return s.connect_ex((ip, port))
    finally:
        s.close()


@pytest.fixture(scope="module")
def connlat() -> Iterator[TcpConnLat]:
    t = TcpConnLat(None)
    t.start()
    try:
        yield t
    finally:
        t.stop()


@pytest.fixture
def lab1(lab_factory: object) -> Lab:
    return lab_factory(nodes=1)  # type: ignore[operator, no-any-return]


def test_23_connects_counted_exactly_and_only_in_the_filtered_namespace(connlat: TcpConnLat, lab1: Lab) -> None:
    node = lab1.nodes()[0]
    connlat.set_netns(ns(node.netns))
    srv = Listener(ns(node.pod_netns), node.pod_ip)
    local = Listener(None, "127.0.0.1")
    try:
        _, est0, fail0, _ = connlat.read()
        slots0 = connlat.read()[0]
        for _ in range(23):
            assert connect(ns(node.netns), node.pod_ip, srv.port) == 0
            assert connect(None, "127.0.0.1", local.port) == 0  # host namespace: must not count
        slots, est, fail, _ = connlat.read()
    finally:
        srv.close()
        local.close()
    assert est - est0 == 23
    assert sum(slots) - sum(slots0) == 23
    assert fail - fail0 == 0
    f = connlat.figures()
    assert 0 < f["p50_us"] <= f["p99_us"]
    le = {s.labels["le"]: s.value for s in connlat.samples(0) if s.name == "tcp_connect_latency_us_bucket"}
    assert le["+Inf"] == est
    assert list(le.values()) == sorted(le.values())  # cumulative


def test_refused_port_counts_as_failure(connlat: TcpConnLat, lab1: Lab) -> None:
    node = lab1.nodes()[0]
    connlat.set_netns(ns(node.netns))
    srv = Listener(ns(node.pod_netns), node.pod_ip)
    port = srv.port
    srv.close()  # nothing listens there now
    _, est0, fail0, _ = connlat.read()
    assert connect(ns(node.netns), node.pod_ip, port) == errno.ECONNREFUSED
    _, est, fail, _ = connlat.read()
    assert (est - est0, fail - fail0) == (0, 1)


def test_syn_retransmit_and_drop_reason(lab1: Lab) -> None:
    node = lab1.nodes()[0]
    pod = ns(node.pod_netns)
    rule = ["-p", "tcp", "--dport", "9", "-j", "DROP"]
    add = subprocess.run(["nsenter", f"--net={pod}", "iptables", "-w", "-A", "INPUT", *rule],
                         capture_output=True, text=True)
    assert add.returncode == 0, add.stderr
    retrans, drops = Retrans(ns(node.netns)), Drops(pod)
    retrans.start()
    try:
        drops.start()
        try:
            # TCP_SYNCNT=1: the SYN and one or two retransmissions (timer slack), then ETIMEDOUT
            assert connect(ns(node.netns), node.pod_ip, 9, timeout=10, syncnt=1) == errno.ETIMEDOUT
            for _ in range(3):  # refused: each SYN is freed with reason NO_SOCKET in the pod namespace
                assert connect(ns(node.netns), node.pod_ip, 10) == errno.ECONNREFUSED
            time.sleep(0.1)
            # ground truth: the DROP rule's own packet counter = first SYN + retransmissions
            save = subprocess.run(["nsenter", f"--net={pod}", "iptables", "-w", "-L", "INPUT", "-v", "-x", "-n"],
                                  capture_output=True, text=True, check=True).stdout
            dropped = int(next(line for line in save.splitlines() if "dpt:9" in line).split()[0])
            assert dropped >= 2
            assert retrans.by_state() == {"SYN_SENT": dropped - 1}
            by = drops.by_reason()
            assert by.get("NO_SOCKET") == 3, by
            assert by.get("NETFILTER_DROP") == dropped, by
        finally:
            drops.stop()
    finally:
        retrans.stop()


def test_sampler_emits_tracer_samples(lab1: Lab) -> None:
    node = lab1.nodes()[0]
    sampler = TracerSampler(TracerSettings(names=("tcpconnlat",), netns=ns(node.netns)))
    srv = Listener(ns(node.pod_netns), node.pod_ip)
    try:
        starter = sampler.start()
        assert starter is not None
        starter.join(60)
        assert sampler.unavailable == {}
        for _ in range(4):
            assert connect(ns(node.netns), node.pod_ip, srv.port) == 0
        got = {(s.name, s.labels.get("le", "")): s.value for s in sampler.sample(1)}
    finally:
        srv.close()
        sampler.close()
    assert got[("tcp_connect_latency_us_bucket", "+Inf")] == 4
    assert got[("tcp_connect_latency_us_count", "")] == 4
    assert got[("tcp_connect_failures_total", "")] == 0
