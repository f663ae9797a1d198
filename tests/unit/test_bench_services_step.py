"""What a service-scaling step adds beside the userspace probe, fed through the collector's real
ClusterState and Store: the in-kernel setup from the source node's tcpconnlat counters (Δsum/Δcount
between the readings taken after each probe), the tracer-not-running path (a note, no waiting),
kube-proxy's own sync time per step from its census figures, and the CNI footprint over the step's
load and measurement windows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cniscope.api.v1 import agent_pb2, cluster_pb2, common_pb2, runs_pb2
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.collector.reports.scaling import render_scaling
from cniscope.collector.runs import footprint_figures
from cniscope.collector.runs import kernel_setup as ks
from cniscope.collector.runs import run_store as rstore
from cniscope.collector.runs.k8s_services import Syncs, sync_delta
from cniscope.collector.runs.manager import RunManager
from cniscope.collector.runs.run_fingerprint import kube_proxy_sync
from cniscope.collector.runs.scaling_step import proxy_row
from cniscope.collector.runs.service_backend import Applied
from cniscope.collector.runs.services import ScalingRun
from cniscope.collector.state import ClusterState, Session
from cniscope.collector.store import Store
from cniscope.lab.lab_services import LAB_PROXY_NOTE

KERNEL_US = 30   # what the scripted kernel takes per connect
USER_US = 50.0   # what the scripted probe measures per connect
MIB = 2**20


def reading(count: float, sum_us: float, t: int = 0, boot: str = "b1") -> ks.Reading:
    return ks.Reading(count, sum_us, t, boot)


def test_delta_is_the_mean_of_the_connects_in_between() -> None:
    k = ks.delta(reading(100, 4000), reading(300, 10000), probe_connects=200)
    assert (k.connects, k.probe_connects, k.mean_us, k.note) == (200, 200, 30.0, "")


def test_delta_names_foreign_connects_restarts_and_nothing_counted() -> None:
    extra = ks.delta(reading(0, 0), reading(205, 6150), probe_connects=200)
    assert extra.connects == 205
    assert extra.mean_us == 30.0
    assert "counted 205 connects for the probe's 200: other connects" in extra.note
    assert "missed some" in ks.delta(reading(0, 0), reading(150, 4500), probe_connects=200).note
    restarted = ks.delta(reading(900, 27000), reading(200, 6000), probe_connects=200)
    assert restarted.mean_us is None
    assert "restarted" in restarted.note
    assert "restarted" in ks.delta(reading(0, 0), reading(200, 6000, boot="b2"), probe_connects=200).note
    none = ks.delta(reading(10, 300), reading(10, 300), probe_connects=200)
    assert none.mean_us is None
    assert "no connect" in none.note


@dataclass
class Agent:
    """A lab node's agent as the collector sees it: a sample batch every ``interval`` (tracer counters
    when ``tracer``, a CNI process's CPU and RSS), and connect probes that feed the counters."""

    state: ClusterState
    store: Store
    node: str
    tracer: bool = True
    interval: float = 0.05
    count: int = 0
    sum_us: int = 0
    seq: int = 0
    stamps: list[int] = field(default_factory=list)
    sent: asyncio.Event = field(default_factory=asyncio.Event)

    async def loop(self) -> None:
        while True:
            now = time.time_ns()
            samples = [common_pb2.Sample(name="agent_spool_depth", value=0, time_unix_nano=now),
                       common_pb2.Sample(name="cni_cpu_millicores", value=120.0, time_unix_nano=now,
                                         labels={"process": "cilium-agent"}),
                       common_pb2.Sample(name="cni_rss_bytes", value=100 * MIB, time_unix_nano=now,
                                         labels={"process": "cilium-agent"})]
            if self.tracer:
                samples += [common_pb2.Sample(name=n, value=v, time_unix_nano=now, labels={"tracer": "tcpconnlat"})
                            for n, v in (("tcp_connect_latency_us_count", self.count),
                                         ("tcp_connect_latency_us_sum", self.sum_us))]
            self.seq += 1
            batch = agent_pb2.Batch(boot_id="b1", seq=self.seq, time_unix_nano=now, samples=samples)
            await self.store.call(self.store.commit_batch, self.node, batch, now)
            self.state.on_batch(self.node, batch, now)
            self.stamps.append(now)
            self.sent.set()
            await asyncio.sleep(self.interval)

    async def run(self, req: common_pb2.ProbeRequest) -> AsyncIterator[cluster_pb2.ProbeUpdate]:
        n = int(req.params["count"])
        started = time.time_ns()
        self.count += n
        self.sum_us += KERNEL_US * n
        yield cluster_pb2.ProbeUpdate(result=common_pb2.ProbeResult(
            probe_id=req.probe_id, kind="connect", source_node=self.node, ok=True, started_unix_nano=started,
            finished_unix_nano=time.time_ns(),
            figures={"attempts": n, "connected": n, "mean_us": USER_US, "p50_us": USER_US, "p99_us": 2 * USER_US}))

    def cancel(self, probe_id: str) -> bool:
        return False


@dataclass
class LabBackend:
    name: str = "iptables-nft"
    applied: list[int] = field(default_factory=list)

    def prepare(self) -> None:
        pass

    def apply(self, n: int) -> Applied:
        self.applied.append(n)
        time.sleep(0.02)
        return Applied(f"198.18.64.{n % 250}", 7411, {"node1": 8 + 10 * n}, 0.02, "198.18.64.1",
                       proxy_note=LAB_PROXY_NOTE)

    def cleanup(self) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "c.db")
    yield s
    s.close()


def lab_state() -> ClusterState:
    state = ClusterState()
    for i in (1, 2, 3):
        hello = agent_pb2.Hello(node=f"node{i}", boot_id="b1", host_ip=f"198.18.0.{10 + i}", pod_ip=f"198.19.{i}.11")
        state.connect(hello, Session(f"node{i}", "b1"), time.time_ns())
    return state


async def scale(store: Store, tracer: bool) -> tuple[dict[int, dict[str, object]], float, Agent, str]:
    state = lab_state()
    agent = Agent(state, store, "node1", tracer=tracer)
    feeding = asyncio.create_task(agent.loop())
    try:
        await agent.sent.wait()
        sr = ScalingRun(state, agent, RunManager(store), lab_backends={"iptables-nft": lambda _lab: LabBackend()})  # type: ignore[arg-type]
        sr.kernel_wait = 2.0
        t0 = time.monotonic()
        ar = await sr.start(runs_pb2.ServiceScalingRequest(counts=[4, 104], backend="iptables-nft", repeat=2,
                                                           connects=50))
        await asyncio.wait_for(ar.done.wait(), 30)
        took = time.monotonic() - t0
    finally:
        feeding.cancel()
    run = await store.call(rstore.get_run, store.conn, ar.run.run_id)
    assert run.status == runs_pb2.RUN_STATUS_DONE, run.error
    detail = json.loads(run.detail_json)
    rows = {r["services"]: r for r in detail["scaling"]["iptables-nft"]["rows"]}
    return rows, took, agent, render_scaling(run.label, detail, "table")


async def test_a_step_reads_the_tracer_after_each_probe(store: Store) -> None:
    rows, _, agent, text = await scale(store, tracer=True)
    for row in rows.values():
        # two repetitions of 50 connects to the last Service, each its own window: the 20 warm-up
        # connects and the 50 to the first Service fall outside
        assert row["kernel_connects"] == row["kernel_probe_connects"] == 100, row
        assert row["kernel_setup_mean_us"] == KERNEL_US
        assert row["kernel_first_mean_us"] == KERNEL_US
        assert row["kernel_walk_us"] == 0
        assert "kernel_note" not in row
        assert row["proxy_note"] == LAB_PROXY_NOTE
        assert row["cni_cpu_load_m"] == row["cni_cpu_measure_m"] == 120.0
        assert row["cni_rss_load_mib"] == row["cni_rss_measure_mib"] == 100.0
    assert agent.count == 2 * 2 * (20 + 50 + 50)
    assert "30.0 µs ×100" in text
    assert "120 m / 120 m" in text
    assert "100.0 MiB" in text
    assert "kube-proxy sync (every N): does not apply" in text


async def test_no_tracer_is_a_note_and_costs_no_waiting(store: Store) -> None:
    rows, took, _, text = await scale(store, tracer=False)
    for row in rows.values():
        assert "kernel_setup_mean_us" not in row
        assert "tracer tcpconnlat is not running on node1" in str(row["kernel_note"])
        assert row["setup_mean_us"] == USER_US
    assert took < 2.0  # four steps, none waiting for a reading that never comes
    assert "not running" in text
    assert "in-kernel setup (tcpconnlat) (every N): tracer tcpconnlat is not running on node1" in text


async def test_a_tracer_that_stops_reporting_is_named_and_waited_for_only_once(store: Store) -> None:
    state = lab_state()
    agent = Agent(state, store, "node1")
    feeding = asyncio.create_task(agent.loop())
    await agent.sent.wait()
    watch = ks.KernelWatch(state, "node1", wait=0.3)
    assert watch.check() is None
    res = [r async for r in agent.run(common_pb2.ProbeRequest(params={"count": "5"}))][0].result
    assert await watch.mark(res) is not None
    feeding.cancel()
    res = [r async for r in agent.run(common_pb2.ProbeRequest(params={"count": "5"}))][0].result
    k = await watch.measure(res)
    assert k.mean_us is None
    assert "sent no counters within 0.3s" in k.note
    watch.wait = 60.0  # a second wait would now outlast the bound below by far
    assert "sent no counters" in (await asyncio.wait_for(watch.measure(res), 10)).note
    # the next step checks again: counters 5 s behind the node's newest sample mean the tracer stopped
    later = time.time_ns() + 6 * 10**9
    state.on_batch("node1", agent_pb2.Batch(boot_id="b1", seq=agent.seq + 1, samples=[
        common_pb2.Sample(name="agent_spool_depth", value=0, time_unix_nano=later)]), later)
    assert "stopped reporting" in str(watch.check())


def test_kube_proxy_sync_per_step_from_its_own_metrics() -> None:
    def report(metrics: cap.KubeProxyMetrics | None) -> common_pb2.CapabilityReport:
        rep = common_pb2.CapabilityReport()
        rep.units.add(name="iptables", ok=True, available=True,
                      iptables=cap.IptablesDetail(kube_proxy=cap.KubeProxy(mode="iptables", metrics=metrics)))
        return rep

    M = cap.KubeProxyMetrics
    assert kube_proxy_sync(report(M(syncs=10, sync_seconds_total=1.5, sync_mean_ms=150.0))) == (10.0, 1.5)
    assert kube_proxy_sync(report(M(syncs=4, sync_mean_ms=250.0))) == (4.0, 1.0)  # stored before the raw sum
    assert kube_proxy_sync(report(M(service_changes_total=3))) == (0.0, 0.0)  # never synced yet
    assert kube_proxy_sync(report(M(syncs=3))) == "kube-proxy metrics without kubeproxy_sync_proxy_rules_duration_seconds"
    assert "connection refused" in str(kube_proxy_sync(report(M(unavailable="connection refused"))))
    assert "CNISCOPE_KUBE_PROXY_METRICS=off" in str(kube_proxy_sync(report(None)))
    assert "no iptables census" in str(kube_proxy_sync(common_pb2.CapabilityReport()))

    before: Syncs = {"a": (10.0, 1.5), "b": (3.0, 0.3), "c": "kube-proxy metrics: connection refused"}
    after: Syncs = {"a": (12.0, 2.1), "b": (5.0, 1.1), "c": "kube-proxy metrics: connection refused"}
    per, note = sync_delta(before, after)
    assert {k: (n, round(t, 6)) for k, (n, t) in per.items()} == {"a": (2.0, 0.6), "b": (2.0, 0.8)}
    assert note == "kube-proxy metrics: connection refused (c)"
    assert "restarted" in sync_delta({"a": (10.0, 1.0)}, {"a": (1.0, 0.1)})[1]

    # the slowest node's mean sync per repetition, the median over repetitions
    reps = [Applied("x", 1, {}, 1.0, proxy_sync=per),
            Applied("x", 1, {}, 1.0, proxy_sync={"a": (1.0, 0.2), "b": (3.0, 0.3)}),
            Applied("x", 1, {}, 1.0, proxy_sync={"a": (2.0, 1.0), "b": (0.0, 0.0)})]
    row = proxy_row(reps)
    assert (row["proxy_sync_ms"], row["proxy_sync_min_ms"], row["proxy_sync_max_ms"]) == (400.0, 200.0, 500.0)
    assert row["proxy_syncs"] == 2.0
    assert proxy_row([Applied("x", 1, {}, 1.0, proxy_sync={"a": (0.0, 0.0)})]) == {
        "proxy_note": "kube-proxy did not sync during the step"}


async def test_footprint_window_takes_the_sample_that_spans_its_end(store: Store) -> None:
    def batch(seq: int, t: int, cpu: float, node: str = "n1") -> tuple[str, agent_pb2.Batch, int]:
        return node, agent_pb2.Batch(boot_id="b1", seq=seq, time_unix_nano=t, samples=[
            common_pb2.Sample(name="cni_cpu_millicores", value=cpu, time_unix_nano=t, labels={"process": p})
            for p in ("cilium-agent", "cilium-envoy")]), t

    s = 10**9
    base = time.time_ns()
    await store.call(store.commit_batches, [batch(1, base, 1.0), batch(2, base + 2 * s, 10.0),
                                            batch(3, base + 4 * s, 100.0), batch(4, base + 6 * s, 1000.0)])
    # a 0.1 s window between two samples: only the one after it covers it (two processes summed)
    vals, points = await store.call(footprint_figures.window_footprint, store.conn, ["n1"], [(base + s, base + s + s // 10)])
    assert (vals, points) == ({"cni_cpu_millicores": 20.0}, 1)
    # a window holding one sample: that one and the one after its end
    vals, points = await store.call(footprint_figures.window_footprint, store.conn, ["n1"], [(base + s, base + 3 * s)])
    assert (vals["cni_cpu_millicores"], points) == (110.0, 2)
    vals, points = await store.call(footprint_figures.window_footprint, store.conn, ["n2"], [(base, base + 6 * s)])
    assert (vals, points) == ({}, 0)
