"""A capability refresh on the agent and the collector's wait for it.

The agent collects in the background, so the stream keeps being read while a unit runs. A unit
still running past the agent's budget is named in a first, unfinished report that carries the units
already finished from this collection and the others from the previous one; the whole report
follows. Requests during a refresh are answered by one more collection, not one each. On the
collector the wait turns an unfinished report into a note naming the node, the unit and how long it
had been running, and a census read from a stale unit is not taken as fresh. The kernel probe of the
readiness unit (a throwaway network namespace) is asked again only once its answer is old.
"""

from __future__ import annotations

import asyncio
import threading
import time
import types
from collections.abc import Callable

import pytest

from cniscope.agent import capabilities
from cniscope.agent.inspectors import readiness
from cniscope.agent.inspectors.unit import READY, UnitResult
from cniscope.agent.node_agent import NodeAgent
from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.collector.runs import capwait
from cniscope.collector.runs.run_fingerprint import data_plane_counts
from cniscope.collector.state import ClusterState, Session
from cniscope.core.config import AgentConfig
from cniscope.core.hostpaths import HostPaths
from cniscope.core.registry import Registry


def refresh_cmd(cid: str) -> agent_pb2.Command:
    return agent_pb2.Command(command_id=cid, refresh_capabilities=agent_pb2.RefreshCapabilities())


async def next_report(agent: NodeAgent) -> common_pb2.CapabilityReport:
    while True:
        msg = await asyncio.wait_for(agent.session.outbox.get(), 5.0)
        if msg.WhichOneof("body") == "capabilities":
            return msg.capabilities


async def test_a_slow_unit_is_named_first_and_requests_coalesce(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    calls = {"fast": 0, "slow": 0, "after": 0}

    def unit(name: str, blocks: bool = False) -> Callable[[HostPaths], UnitResult]:
        def run(paths: HostPaths) -> UnitResult:
            calls[name] += 1
            if blocks and calls[name] == 2:   # the second collection's census is the slow one
                assert gate.wait(10)
            res = UnitResult(cap.KernelDetail(release=f"6.18.{calls[name]}"), summary=f"round {calls[name]}")
            res.item(f"{name}_item", READY, f"round {calls[name]}")
            return res
        return run

    reg: Registry[Callable[[HostPaths], UnitResult]] = Registry("inspector")
    reg.register("fast", unit("fast"))
    reg.register("slow", unit("slow", blocks=True))
    reg.register("after", unit("after"))
    monkeypatch.setattr(capabilities, "INSPECTORS", reg)
    agent = NodeAgent(AgentConfig(node="node1", capabilities_budget=0.3), HostPaths())
    first = capabilities.Progress()
    agent.refresh.report = capabilities.collect(progress=first)   # what the agent collected at start
    agent.refresh.last_progress = first

    t0 = time.monotonic()
    await asyncio.wait_for(agent.commands.handle(refresh_cmd("c1")), 5)
    assert agent.refresh.task is not None
    assert not agent.refresh.task.done()         # handled in the background (the slow unit waits): the stream is read on
    ack = (await asyncio.wait_for(agent.session.outbox.get(), 1)).command_ack
    assert (ack.command_id, ack.accepted) == ("c1", True)

    part = await next_report(agent)
    assert 0.25 < time.monotonic() - t0 < 2
    assert part.HasField("unfinished")
    assert part.unfinished.running == "slow"
    assert part.unfinished.running_seconds >= 0.25
    assert list(part.unfinished.stale) == ["slow", "after"]
    rounds = {u.name: u.summary for u in part.units}
    assert rounds == {"fast": "round 2", "slow": "round 1", "after": "round 1"}  # fresh where finished, else the previous
    assert {u.name: u.kernel.release for u in part.units} == {"fast": "6.18.2", "slow": "6.18.1", "after": "6.18.1"}
    assert sorted(i.reason for i in part.items) == ["round 1", "round 1", "round 2"]

    t1 = time.monotonic()
    for cid in ("c2", "c3"):                    # two more requests while the census still runs
        await agent.commands.handle(refresh_cmd(cid))
    part2 = await next_report(agent)            # answered within the budget too, once for both
    assert 0.25 < time.monotonic() - t1 < 2
    assert part2.unfinished.running == "slow"
    assert part2.unfinished.running_seconds > part.unfinished.running_seconds
    assert part2.time_unix_nano > part.time_unix_nano   # news to the collector: a fresh answer
    gate.set()
    whole = await next_report(agent)
    assert not whole.HasField("unfinished")
    assert {u.name: u.summary for u in whole.units} == {"fast": "round 2", "slow": "round 2", "after": "round 2"}
    assert whole.time_unix_nano < part.time_unix_nano   # stamped when it started, so never taken for a partial
    again = await next_report(agent)            # one collection answers both requests
    assert {u.name: u.summary for u in again.units} == {"fast": "round 3", "slow": "round 3", "after": "round 3"}
    assert agent.refresh.task is not None
    await asyncio.wait_for(agent.refresh.task, 2)
    assert calls == {"fast": 3, "slow": 3, "after": 3}
    assert agent.capabilities == again


def census_report(nat_rules: int, *, stale: list[str] | None = None) -> common_pb2.CapabilityReport:
    rep = common_pb2.CapabilityReport(time_unix_nano=time.time_ns())
    rep.units.add(name="iptables", ok=True, available=True,
                  iptables=cap.IptablesDetail(kube_proxy=cap.KubeProxy(mode="iptables", nat_rules=nat_rules)))
    if stale is not None:
        rep.unfinished.running = stale[0]
        rep.unfinished.running_seconds = 6.2
        rep.unfinished.stale.extend(stale)
    return rep


async def test_the_collector_names_the_slow_unit_and_waits_for_a_complete_census() -> None:
    state = ClusterState()
    for n in ("node1", "node2"):
        state.connect(agent_pb2.Hello(node=n, boot_id="b", host_ip="198.18.0.11",
                                      capabilities=census_report(48)), Session(n, "b"), time.time_ns())

    async def answer(node: str, *reports: tuple[float, common_pb2.CapabilityReport]) -> None:
        """The agent: waits for the refresh command, then sends each report after its delay."""
        s = state.sessions[node]
        while True:
            msg = await s.outbox.get()
            if not isinstance(msg, bytes) and msg.command.WhichOneof("body") == "refresh_capabilities":
                break
        for delay, rep in reports:
            await asyncio.sleep(delay)
            state.on_capabilities(node, rep)

    agents = [asyncio.create_task(answer("node1", (0.2, census_report(58)))),
              asyncio.create_task(answer("node2", (0.2, census_report(48, stale=["iptables"])),
                                                  (1.0, census_report(58))))]
    r = await capwait.refresh(state, ["node1", "node2"], 3.0)
    assert r.late == []
    assert r.slow == {"node2": ("iptables", 6.2)}
    assert r.note(10) == "node2: capability unit iptables still running after 6.2s, its previous result is used"
    assert not agents[1].done()                 # the unfinished report was enough: node2's whole one is yet to come
    assert data_plane_counts(state.nodes["node2"].capabilities) == {}   # a stale census counts nothing
    await asyncio.gather(*agents)

    agents = [asyncio.create_task(answer("node1", (0.2, census_report(68)))),
              asyncio.create_task(answer("node2", (0.2, census_report(58, stale=["iptables"])),
                                                  (1.0, census_report(68))))]
    r = await capwait.refresh(state, ["node1", "node2"], 3.0, complete=True)
    assert (r.late, r.slow) == ([], {})
    assert r.seconds > 1.1                      # waited for the whole report
    assert data_plane_counts(state.nodes["node2"].capabilities) == {"nat_rules": 68}
    await asyncio.gather(*agents)

    r = await capwait.refresh(state, ["node1"], 0.3)   # nobody answers now
    assert r.late == ["node1"]
    assert r.note(0.3) == "capability report not refreshed within 0.3s on node1: the last one received is used"


def test_the_namespace_probe_is_asked_again_only_when_old(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[float] = []

    def probe(timeout: float = 10) -> tuple[dict[str, tuple[int, str]], str]:
        runs.append(time.monotonic())
        return {"veth": (0, ""), "fq": (2, "Specified qdisc kind is unknown.")}, ""

    now = [1000.0]   # the cache's clock, moved by the test (a busy machine cannot age it by accident)
    monkeypatch.setattr(readiness, "run_probe", probe)
    monkeypatch.setattr(readiness, "_probe_cache", None)
    monkeypatch.setattr(readiness, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    out, err, age = readiness.cached_probe(ttl=0.3)
    assert (out["fq"][0], err, age) == (2, "", 0.0)
    now[0] += 0.2
    _, _, age = readiness.cached_probe(ttl=0.3)
    assert len(runs) == 1
    assert age == pytest.approx(0.2)
    now[0] += 0.15
    readiness.cached_probe(ttl=0.3)
    assert len(runs) == 2
    monkeypatch.setattr(readiness, "run_probe", lambda timeout=10: ({"veth": (1, "no veth")}, "could not"))
    monkeypatch.setattr(readiness, "_probe_cache", None)
    readiness.cached_probe(ttl=60)
    assert readiness._probe_cache is None        # a probe that could not run is asked again next time
