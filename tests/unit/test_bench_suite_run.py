"""A suite run against a scripted dispatcher (no network): figures map from probe results, an item
whose every attempt failed is skipped with the first error, repetitions × pairs are all stored, and
the census gives NAT rules."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cniscope.api.v1 import agent_pb2, cluster_pb2, common_pb2, runs_pb2
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.collector.runs import run_store as rstore
from cniscope.collector.runs import suite_run as suite_run_mod
from cniscope.collector.runs.manager import RunManager
from cniscope.collector.runs.suite import Item
from cniscope.collector.runs.suite_run import SuiteRun
from cniscope.collector.store import Store
from cniscope.core.probekinds import spec_for


@dataclass
class FakeSession:
    node: str
    state: FakeState

    def send(self, msg: agent_pb2.CollectorMessage) -> bool:
        if msg.command.WhichOneof("body") == "refresh_capabilities":  # the agent answers at once
            self.state.nodes[self.node].capabilities.time_unix_nano += 1
        return True


@dataclass
class FakeState:
    nodes: dict[str, cluster_pb2.NodeState] = field(default_factory=dict)
    sessions: dict[str, FakeSession] = field(default_factory=dict)


class ScriptedDispatcher:
    def __init__(self) -> None:
        self.requests: list[common_pb2.ProbeRequest] = []
        self.rtt = iter([100.0, 300.0, 200.0, 150.0, 250.0, 50.0, 120.0, 180.0, 90.0])

    async def run(self, req: common_pb2.ProbeRequest) -> AsyncIterator[cluster_pb2.ProbeUpdate]:
        self.requests.append(req)
        res = common_pb2.ProbeResult(probe_id=f"p{len(self.requests)}", kind=req.kind, ok=True)
        if req.kind == "rtt":
            v = next(self.rtt)
            res.figures.update({"p50_us": v, "p99_us": v * 2})
        elif req.kind == "connect":
            res.ok, res.error = False, "connect refused by target"
        yield cluster_pb2.ProbeUpdate(progress=common_pb2.ProbeProgress(probe_id=res.probe_id, fraction=0.5))
        yield cluster_pb2.ProbeUpdate(result=res)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "c.db")
    yield s
    s.close()


def lab_state() -> FakeState:
    st = FakeState()
    census = cap.IptablesDetail(iptables_nft=cap.IptablesBackend(ran=True, tables={"nat": cap.IptablesTable(rules=48)}),
                                iptables_legacy=cap.IptablesBackend(ran=True))
    for i in (1, 2, 3):
        rep = common_pb2.CapabilityReport(kernel="6.18")
        rep.units.add(name="iptables", ok=True, available=True, iptables=census)
        st.nodes[f"node{i}"] = cluster_pb2.NodeState(node=f"node{i}", host_ip=f"198.18.0.{10 + i}",
                                                     pod_ip=f"198.19.{i}.11", capabilities=rep)
        st.sessions[f"node{i}"] = FakeSession(f"node{i}", st)
    return st


async def test_suite_run_maps_figures_and_explains_skips(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    items = [
        Item("rtt", "rtt", {"rtt.p50": "p50_us", "rtt.p99": "p99_us"}, spec_for("rtt").params.validate({"count": 5})),
        Item("connect", "connect", {"connect.mean": "mean_us"}, spec_for("connect").params.validate({"count": 5})),
        Item("footprint", "footprint", {"cni.cpu_m": "cni_cpu_millicores"}, needs_target=False),
        Item("census", "census", {"nat.rules": "nat_rules"}, needs_target=False),
    ]
    monkeypatch.setattr(suite_run_mod, "items", lambda suite, only: items)
    state, disp = lab_state(), ScriptedDispatcher()
    mgr = RunManager(store)
    sr = SuiteRun(state, disp, mgr)  # type: ignore[arg-type]
    ar = await sr.start(runs_pb2.StartRunRequest(label="scripted", suite="quick", repeat=3, pairs="all"))
    await asyncio.wait_for(ar.done.wait(), 20)
    run = await store.call(rstore.get_run, store.conn, ar.run.run_id)
    assert run.status == runs_pb2.RUN_STATUS_DONE, run.error
    assert list(run.pairs) == ["node1→node2", "node2→node3", "node3→node1"]
    # 3 repetitions × 3 pairs for rtt and connect, each with its parameters on the wire
    assert [r.kind for r in disp.requests].count("rtt") == 9
    assert len(disp.requests) == 18
    assert {r.kind for r in disp.requests} == {"rtt", "connect"}
    assert all(r.path == "pod" and r.target_node and r.params["count"] == "5" for r in disp.requests)
    skipped = {s.item: s.reason for s in run.skipped}
    assert "connect refused by target" in skipped["connect"]
    assert "no CNI agent process" in skipped["footprint"]
    assert "census" not in skipped
    assert run.figures["nat.rules"].median == 48
    assert run.fingerprint["environment"] == "lab: netns, iptables-nft"
    assert run.fingerprint["nat_rules_per_node"] == "48, 48, 48"
    stored = await store.call(rstore.values, store.conn, run.run_id)
    assert len(stored["rtt.p50"]) == 9
    assert run.figures["rtt.p50"].n == 9
    assert run.figures["rtt.p50"].median == 150.0  # median of the nine scripted values
    assert (run.figures["rtt.p50"].min, run.figures["rtt.p50"].max) == (50.0, 300.0)
    assert run.figures["rtt.p99"].median == 2 * run.figures["rtt.p50"].median
    assert "connect.mean" not in run.figures
    detail = json.loads(run.detail_json)
    assert len(detail["failures"]["connect"]) == 9
    assert len(detail["windows"]) == 3


async def test_too_few_nodes_is_refused(store: Store) -> None:
    st = FakeState()
    sr = SuiteRun(st, ScriptedDispatcher(), RunManager(store))  # type: ignore[arg-type]
    with pytest.raises(Exception, match="two connected nodes"):
        await sr.start(runs_pb2.StartRunRequest(label="x", suite="quick"))
    with pytest.raises(Exception, match="label"):
        await sr.start(runs_pb2.StartRunRequest(label="  ", suite="quick"))


async def test_dispatcher_cancel_reaches_the_source_and_the_target_only_after_it(store: Store) -> None:
    """A cancel goes to the source; the target's one-off server is stopped once the source's result is
    in (by the probe's loop), so the client never sees its server vanish first. With the source gone
    there is nobody to answer, and the target is told at once."""
    from cniscope.collector.dispatcher import Dispatcher, Pending
    from cniscope.collector.state import ClusterState, Session

    state = ClusterState()
    for n in ("node1", "node2"):
        state.sessions[n] = Session(n, "boot")
    d = Dispatcher(state, store)
    assert d.cancel("nope") is False
    req = common_pb2.ProbeRequest(probe_id="r1.1", kind="tcp", source_node="node1", target_node="node2")
    d.pending["r1.1"] = Pending(req, asyncio.get_running_loop().create_future(), served=True)
    assert d.cancel("r1.1") is True
    first = state.sessions["node1"].outbox.get_nowait()
    assert isinstance(first, agent_pb2.CollectorMessage)
    sent = first.command
    assert sent.WhichOneof("body") == "cancel_probe"
    assert sent.cancel_probe.probe_id == "r1.1"
    assert state.sessions["node2"].outbox.empty()     # the target keeps serving until the result
    d.on_ack(agent_pb2.CommandAck(command_id=sent.command_id, accepted=True), "node1")
    assert sent.command_id not in d._acks  # answered quietly, nothing left waiting

    del state.sessions["node1"]                       # the source is gone: stop the target now
    assert d.cancel("r1.1") is True
    second = state.sessions["node2"].outbox.get_nowait()
    assert isinstance(second, agent_pb2.CollectorMessage)
    assert second.command.WhichOneof("body") == "stop_target"


async def test_service_path_items_go_to_the_front_of_the_target_or_are_skipped(store: Store,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A service-path item is sent to the ClusterIP fronting the target node's probe pod, and the
    fingerprint says what fronts it; without fronting Services it is skipped and nothing is sent."""
    from cniscope.collector.runs.service_fronts import NO_FRONTS, Fronts

    items = [
        Item("rtt", "rtt", {"rtt.p50": "p50_us"}, spec_for("rtt").params.validate({"count": 5})),
        Item("svc_connect", "connect", {"svc_connect.mean": "mean_us"},
             spec_for("connect").params.validate({"count": 5}), path="service"),
    ]
    monkeypatch.setattr(suite_run_mod, "items", lambda suite, only: items)
    fronts = Fronts({"node2": "198.18.127.2", "node3": "198.18.127.3"}, 1000, "eBPF socket LB")
    disp = ScriptedDispatcher()
    sr = SuiteRun(lab_state(), disp, RunManager(store), lambda: fronts)  # type: ignore[arg-type]
    ar = await sr.start(runs_pb2.StartRunRequest(label="svc", suite="quick", repeat=1, pairs="node1:node2"))
    await asyncio.wait_for(ar.done.wait(), 20)
    svc = [r for r in disp.requests if r.path == "service"]
    assert [(r.kind, r.target_node, r.target_address) for r in svc] == [("connect", "node2", "198.18.127.2")]
    assert ar.run.fingerprint["service_path"] == ("ClusterIP per node (2 Services) + 1,000 filler Services, "
                                                  "eBPF socket LB")

    disp = ScriptedDispatcher()
    sr = SuiteRun(lab_state(), disp, RunManager(store), lambda: None)  # type: ignore[arg-type]
    ar = await sr.start(runs_pb2.StartRunRequest(label="no fronts", suite="quick", repeat=1, pairs="node1:node2"))
    await asyncio.wait_for(ar.done.wait(), 20)
    assert [r.kind for r in disp.requests] == ["rtt"]
    assert {s.item: s.reason for s in ar.run.skipped} == {"svc_connect": NO_FRONTS}
    assert "service_path" not in ar.run.fingerprint
