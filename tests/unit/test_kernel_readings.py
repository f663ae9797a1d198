"""Every repetition of a service-scaling step gets its in-kernel reading when the agent reads its
tracer around the probe: no sample batch is waited for, and a missing reading is explained in the
agent's own words (not configured, still compiling, failed to start, another namespace)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cniscope.agent.probes.connect import kernel_figures
from cniscope.agent.tracers import live
from cniscope.agent.tracers.tcpconnlat import TcpConnLat
from cniscope.api.v1 import agent_pb2, cluster_pb2, common_pb2, runs_pb2
from cniscope.collector.runs import kernel_setup as ks
from cniscope.collector.runs import run_store as rstore
from cniscope.collector.runs.manager import RunManager
from cniscope.collector.runs.service_backend import Applied
from cniscope.collector.runs.services import ScalingRun
from cniscope.collector.state import ClusterState, Session
from cniscope.collector.store import Store

KERNEL_US = 30.0


@dataclass
class DirectAgent:
    """An agent whose connect results carry its tracer's reading around the probe (or a note), and
    which sends no tracer samples at all: nothing for the collector to wait for."""

    node: str = "node1"
    note: str = ""

    async def run(self, req: common_pb2.ProbeRequest) -> AsyncIterator[cluster_pb2.ProbeUpdate]:
        n = int(req.params["count"])
        figures = {"attempts": n, "connected": n, "mean_us": 50.0, "p50_us": 50.0, "p99_us": 100.0}
        detail = {"port": 7411}
        if self.note:
            detail["kernel_note"] = self.note  # type: ignore[assignment]
        else:
            figures.update(kernel_figures((1000, 2, 30_000), (1000 + n, 2, 30_000 + int(KERNEL_US * n))))
        now = time.time_ns()
        yield cluster_pb2.ProbeUpdate(result=common_pb2.ProbeResult(
            probe_id=req.probe_id, kind="connect", source_node=self.node, ok=True, started_unix_nano=now,
            finished_unix_nano=now, figures=figures, detail_json=json.dumps(detail)))

    def cancel(self, probe_id: str) -> bool:
        return False


@dataclass
class Backend:
    name: str = "ebpf"

    def prepare(self) -> None:
        pass

    def apply(self, n: int) -> Applied:
        return Applied(str(ipaddress.ip_address("198.18.64.10") + n - 1), 7411, {"all nodes": 4 * n}, 0.001,
                       "198.18.64.10", signal="BPF service map entries")

    def cleanup(self) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "c.db")
    yield s
    s.close()


async def scale(store: Store, agent: DirectAgent) -> dict[int, dict[str, object]]:
    state = ClusterState()
    for i in (1, 2, 3):
        hello = agent_pb2.Hello(node=f"node{i}", boot_id="b1", host_ip=f"198.18.0.{10 + i}", pod_ip=f"198.19.{i}.11")
        state.connect(hello, Session(f"node{i}", "b1"), time.time_ns())
    sr = ScalingRun(state, agent, RunManager(store), lab_backends={"ebpf": lambda _lab: Backend()})  # type: ignore[arg-type]
    sr.kernel_wait = 30.0   # were anything waited for, the bound below would catch it
    t0 = time.monotonic()
    ar = await sr.start(runs_pb2.ServiceScalingRequest(counts=[4, 104, 1000], backend="ebpf", repeat=3, connects=50))
    await asyncio.wait_for(ar.done.wait(), 30)
    assert time.monotonic() - t0 < 5.0
    run = await store.call(rstore.get_run, store.conn, ar.run.run_id)
    assert run.status == runs_pb2.RUN_STATUS_DONE, run.error
    return {r["services"]: r for r in json.loads(run.detail_json)["scaling"]["ebpf"]["rows"]}


async def test_every_repetition_carries_its_own_reading(store: Store) -> None:
    rows = await scale(store, DirectAgent())
    assert sorted(rows) == [4, 104, 1000]
    for row in rows.values():
        assert row["kernel_repeat"] == 3, row
        assert row["kernel_connects"] == row["kernel_probe_connects"] == 150, row
        assert row["kernel_setup_mean_us"] == KERNEL_US
        assert row["kernel_first_mean_us"] == KERNEL_US
        assert "kernel_note" not in row


async def test_a_missing_reading_names_the_agents_reason(store: Store) -> None:
    why = "tracer tcpconnlat is still compiling and loading (4s so far)"
    rows = await scale(store, DirectAgent(note=why))
    for row in rows.values():
        assert "kernel_setup_mean_us" not in row
        assert row["kernel_note"] == f"node1: {why}", row   # not "is not running"


def test_kernel_figures_are_the_counters_across_the_connects() -> None:
    assert kernel_figures((10, 1, 400), (60, 1, 1900)) == {
        "kernel_connects": 50.0, "kernel_failures": 0.0, "kernel_setup_sum_us": 1500.0, "kernel_setup_mean_us": 30.0}
    assert "kernel_setup_mean_us" not in kernel_figures((10, 1, 400), (10, 3, 400))
    direct = ks.direct(common_pb2.ProbeResult(source_node="n", figures={"connected": 50, **kernel_figures(
        (0, 0, 0), (52, 0, 1560))}))
    assert direct is not None
    assert (direct.connects, direct.mean_us) == (52, 30.0)
    assert "other connects from the traced namespace" in direct.note
    assert ks.direct(common_pb2.ProbeResult(figures={"connected": 5})) is None   # an agent that does not read


@pytest.fixture
def registry() -> Iterator[None]:
    live.reset()
    yield
    live.reset()


def test_live_says_why_there_is_no_tracer(registry: None, tmp_path: Path) -> None:
    assert "is not configured on this agent" in live.find("tcpconnlat")[1]
    live.configured("tcpconnlat")
    assert "has not started yet" in live.find("tcpconnlat")[1]
    live.starting("tcpconnlat")
    assert "is still compiling and loading" in live.find("tcpconnlat")[1]
    live.failed("tcpconnlat", "kernel headers not found")
    assert live.find("tcpconnlat")[1] == "tracer tcpconnlat could not start: kernel headers not found"
    here = TcpConnLat(None)                       # watches every namespace
    live.started(here)
    assert live.find("tcpconnlat", "/proc/self/ns/net") == (here, "")
    live.stopped(here)
    assert live.find("tcpconnlat")[1] == "tracer tcpconnlat was stopped"
    elsewhere = tmp_path / "netns-file"             # stands for another namespace's file: another inode
    elsewhere.write_text("")
    other = TcpConnLat(str(elsewhere))
    live.started(other)
    tracer, why = live.find("tcpconnlat", "/proc/self/ns/net")
    assert tracer is None
    assert f"watches network namespace {elsewhere}" in why
