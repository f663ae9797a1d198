"""The connect probe reads the agent's tcpconnlat tracer around its own connects: with a real tracer
on the source pod's namespace every probe's result carries the kernel's count of exactly its
connects, repetition after repetition, and a probe from a namespace the tracer does not watch says so."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from cniscope.agent import nsthread
from cniscope.agent.probes.connect import ConnectProbe
from cniscope.agent.probes.probe import Outcome, ProbeContext
from cniscope.agent.tracers import live
from cniscope.agent.tracers.tcpconnlat import TcpConnLat
from cniscope.core.probekinds import spec_for
from cniscope.lab import netns
from cniscope.lab.lab import Lab

pytestmark = [pytest.mark.bcc, pytest.mark.netns]


@pytest.fixture
def accept_in_pod2(lab_factory: object) -> Iterator[tuple[Lab, int]]:
    lab: Lab = lab_factory(nodes=2)  # type: ignore[operator]
    pod2 = lab.nodes()[1]
    sock = nsthread.listening_socket(str(netns.NETNS_DIR / pod2.pod_netns), pod2.pod_ip, 0)
    sock.setblocking(True)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield lab, sock.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        sock.close()


async def probe(lab: Lab, port: int, ns: str, count: int) -> Outcome:
    target = lab.nodes()[1]
    ctx = ProbeContext("p", "connect", "node1", "node2", target.pod_ip, "pod",
                       spec_for("connect").params.validate({"count": str(count), "port": str(port)}), netns=ns)
    return await ConnectProbe().run(ctx)


async def test_every_probe_carries_the_kernel_count_of_its_own_connects(accept_in_pod2: tuple[Lab, int]) -> None:
    lab, port = accept_in_pod2
    pod1 = str(netns.NETNS_DIR / lab.nodes()[0].pod_netns)
    live.reset()
    assert "not configured" in str((await probe(lab, port, pod1, 3)).detail["kernel_note"])
    tracer = TcpConnLat(pod1)
    tracer.start()
    live.started(tracer)
    try:
        for count in (40, 7, 40):
            out = await probe(lab, port, pod1, count)
            f = out.figures
            assert out.ok, out.error
            assert f["kernel_connects"] == f["connected"] == count, f
            assert f["kernel_failures"] == 0
            assert 0 < f["kernel_setup_mean_us"] <= f["mean_us"], f   # each SYN_SENT → ESTABLISHED inside connect()
            assert "kernel_note" not in out.detail
        node1 = str(netns.NETNS_DIR / lab.nodes()[0].netns)         # the host path: not the traced namespace
        out = await probe(lab, port, node1, 3)
        assert "kernel_connects" not in out.figures
        assert f"watches network namespace {pod1}" in str(out.detail["kernel_note"])
    finally:
        live.stopped(tracer)
        tracer.stop()
        live.reset()
