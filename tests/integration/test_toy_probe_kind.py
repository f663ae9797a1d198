"""Adding a probe kind is one row in the probe table plus one agent registry line: a toy kind
registered here (and removed afterwards) shows up in ``cniscope probe --help``, in the TUI probe form,
in the collector's validation and bandwidth scheduling, in a real agent's run of it, and in a run
suite with its own metric — against a real in-process collector and two real agents on localhost."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from textual.widgets import Input, Select

from cniscope.agent.node_agent import NodeAgent
from cniscope.agent.probes import PROBES
from cniscope.agent.probes.probe import Outcome, ProbeContext
from cniscope.api.v1 import common_pb2, runs_pb2, runs_pb2_grpc
from cniscope.cli import build_parser
from cniscope.client.grpc_collector import CollectorClient
from cniscope.collector.runs.suite import items
from cniscope.collector.server import Collector
from cniscope.core import benchmetrics, grpcutil
from cniscope.core.config import AgentConfig
from cniscope.core.errors import ValidationError
from cniscope.core.params import Param, ParamSet
from cniscope.core.probekinds import KINDS, spec_for
from cniscope.core.probespec import HIGHER, BenchFigure, BenchGroup, Figure, ProbeSpec
from cniscope.tui.app import CniscopeApp
from cniscope.tui.screens.probe_form import ProbeForm

sys.path.insert(0, str(Path(__file__).parents[1]))
import pipeline_kit as kit  # type: ignore[import-not-found]  # noqa: E402
import tui_kit  # type: ignore[import-not-found]  # noqa: E402

TOY = ProbeSpec(
    "toy", "Toy: counts to LOOPS without sending a packet",
    ParamSet((
        Param("loops", "int", 3, "loops to count", min=1, max=9),
        Param("nap", "float", 0.05, "seconds the count takes", min=0, max=2, unit="s"),
        Param("hog", "bool", False, "hold both nodes while counting (a bandwidth probe)"),
    )),
    figures=(Figure("loops_done", "toy loops", "", HIGHER),),
    benchmarks=(BenchGroup("toy", "Toy loops", (BenchFigure("loops", "loops_done", 0),),
                           {"quick": ({"loops": 7},)}),),
    bandwidth_param="hog",
)


@dataclass
class ToyProbe:
    """The agent side: reads its parameters typed, and notes when each run held the CPU."""

    runs: list[tuple[ProbeContext, float, float]] = field(default_factory=list)

    async def run(self, ctx: ProbeContext) -> Outcome:
        loops = ctx.params.integer("loops")  # a TypeError here would mean a string got this far
        t0 = time.monotonic()
        await asyncio.sleep(ctx.params.number("nap"))
        self.runs.append((ctx, t0, time.monotonic()))
        return Outcome(ok=True, figures={"loops_done": float(loops)})


@contextlib.contextmanager
def registered_toy() -> Iterator[ToyProbe]:
    """The toy's row in the probe table and its agent implementation, removed again on the way out."""
    impl = ToyProbe()
    KINDS.register(TOY)
    PROBES.register("toy", impl)
    try:
        yield impl
    finally:
        KINDS.unregister("toy")
        PROBES.unregister("toy")


@pytest.fixture
def toy() -> Iterator[ToyProbe]:
    with registered_toy() as impl:
        yield impl


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Collector]:
    """A collector and two agents (node1, node2) on localhost; the toy kind sends no packet, so the
    nodes' host and pod addresses need not exist."""
    col = await kit.start_collector(tmp_path)
    agents = [NodeAgent(AgentConfig(node=f"node{i}", collector=kit.address(col), host_ip=f"198.18.0.{10 + i}",
                                pod_ip=f"198.19.{i}.11", pod_netns=f"/run/netns/toy-pod{i}",
                                sample_interval=0.5, mesh_interval=0, token_file=""))
              for i in (1, 2)]
    tasks = [asyncio.create_task(a.session.connection_loop()) for a in agents]
    try:
        await kit.until(lambda: {"node1", "node2"} <= set(col.state.sessions)
                        and all(len(a.peers) == 2 for a in agents), 20, "two agents with their peer tables")
        yield col
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await col.stop()


def _help(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return out.getvalue()


def test_a_duplicate_kind_is_refused(toy: ToyProbe) -> None:
    with pytest.raises(ValueError, match="duplicate probe kind 'toy'"):
        KINDS.register(TOY)
    with pytest.raises(ValueError, match="duplicate probe kind 'rtt'"):
        KINDS.register(replace(spec_for("rtt"), title="another rtt"))
    with pytest.raises(ValueError, match="duplicate probe 'toy'"):
        PROBES.register("toy", ToyProbe())


def test_registration_leaves_no_trace() -> None:
    with registered_toy():
        assert benchmetrics.metric("toy.loops").title == "toy loops"
        assert "toy" in [i.kind for i in items("quick")]
    assert "toy" not in KINDS
    assert "toy" not in PROBES
    assert "toy" not in [i.kind for i in items("quick")]
    with pytest.raises(ValidationError, match="unknown metric"):
        benchmetrics.metric("toy.loops")


def test_a_row_that_contradicts_itself_is_refused_where_it_is_declared() -> None:
    with pytest.raises(ValueError, match="bandwidth_param 'loops' is not a bool parameter"):
        replace(TOY, bandwidth_param="loops")
    with pytest.raises(ValueError, match="reads undeclared figures"):
        replace(TOY, figures=())
    with pytest.raises(ValidationError, match="loops: 12 is above the cap 9"):
        replace(TOY, benchmarks=(replace(TOY.benchmarks[0], suites={"quick": ({"loops": 12},)}),))


def test_cli_help_lists_the_kind_and_its_options(toy: ToyProbe) -> None:
    assert "Toy: counts to LOOPS" in _help("probe")
    text = _help("probe", "toy")
    assert "loops to count [1..9] (default 3)" in text
    assert "--hog, --no-hog" in text
    assert "with --hog it owns both nodes" in text
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
        build_parser().parse_args(["probe", "toy", "--from", "node1", "--loops", "12"])
    assert "loops: 12 is above the cap 9" in err.getvalue()


async def test_dispatcher_validates_and_schedules_by_the_row(toy: ToyProbe, cluster: Collector) -> None:
    d = cluster.dispatcher
    light = d.validate(common_pb2.ProbeRequest(kind="toy", source_node="node1", target_node="node2",
                                               params={"loops": "4"}))
    assert dict(light.request.params) == {"loops": "4", "nap": "0.05", "hog": "false"}
    assert (light.bandwidth, light.served, light.expected) == (False, False, 5.0)
    assert d.validate(common_pb2.ProbeRequest(kind="toy", source_node="node1", target_node="node2",
                                              params={"hog": "yes"})).bandwidth
    with pytest.raises(ValidationError, match="above the cap 9"):
        d.validate(common_pb2.ProbeRequest(kind="toy", source_node="node1", target_node="node2",
                                           params={"loops": "10"}))
    with pytest.raises(ValidationError, match="a target node or a target address is required"):
        d.validate(common_pb2.ProbeRequest(kind="toy", source_node="node1", params={}))

    async def fire(src: str, dst: str) -> tuple[common_pb2.ProbeResult, list[str]]:
        req = common_pb2.ProbeRequest(kind="toy", source_node=src, target_node=dst,
                                      params={"hog": "true", "nap": "0.4", "loops": "5"})
        notes, result = [], None
        async for upd in d.run(req):
            if upd.WhichOneof("body") == "progress":
                notes.append(upd.progress.message)
            else:
                result = upd.result
        assert result is not None
        return result, notes

    # two bandwidth probes from different sources share both nodes: the collector runs them one after
    # the other (each agent's own lock guards only its source)
    (r1, n1), (r2, n2) = await asyncio.gather(fire("node1", "node2"), fire("node2", "node1"))
    assert r1.ok, r1.error
    assert r2.ok, r2.error
    assert r1.figures["loops_done"] == r2.figures["loops_done"] == 5
    assert r1.params["loops"] == "5"
    assert {r1.target_address, r2.target_address} == {"198.18.0.11", "198.18.0.12"}
    (_, _, first_end), (_, second_start, _) = sorted(toy.runs, key=lambda r: r[1])
    assert first_end <= second_start, "the two bandwidth probes overlapped"
    assert any("queued: a bandwidth probe holds a node" in m for m in n1 + n2)


async def test_tui_form_offers_the_kind_and_fires_it(toy: ToyProbe, cluster: Collector) -> None:
    app = CniscopeApp(CollectorClient(kit.address(cluster)))
    async with app.run_test(size=(160, 45)) as pilot:
        await tui_kit.until(lambda: app.model.counts() == (2, 2), 10, pilot, "two connected nodes")
        await pilot.press("p")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, ProbeForm)
        form.query_one("#f-kind", Select).value = "toy"  # refused unless "toy" is one of the choices
        await tui_kit.until(lambda: bool(form.query("#p-loops")), 5, pilot, "the toy's parameter fields")
        assert "with --hog it owns both nodes" in tui_kit.text_of(form.query_one("#form-summary"))
        form.query_one("#p-loops", Input).value = "6"
        await pilot.press("ctrl+s")
        await tui_kit.until(lambda: any(e.result is not None and e.result.kind == "toy"
                                        for e in app.model.probes.values()), 20, pilot, "the toy's result")
        res = next(e.result for e in app.model.probes.values() if e.result is not None and e.result.kind == "toy")
        assert res.ok, res.error
        assert res.figures["loops_done"] == 6
        assert res.params["loops"] == "6"


async def test_a_suite_runs_the_kind_and_reports_its_metric(toy: ToyProbe, cluster: Collector) -> None:
    assert [i.name for i in items("quick", ["toy"])] == ["toy"]
    assert benchmetrics.metric("toy.loops").table == "Toy loops"
    req = runs_pb2.StartRunRequest(label="toy", suite="quick", repeat=2, pairs="node1:node2", only=["toy"])
    final = None
    async with grpcutil.insecure_channel(kit.address(cluster)) as ch:
        async for upd in runs_pb2_grpc.RunsStub(ch).StartRun(req, timeout=60):
            if upd.WhichOneof("body") == "run":
                final = upd.run
    assert final is not None
    assert final.status == runs_pb2.RUN_STATUS_DONE, final.error
    assert final.figures["toy.loops"].median == 7
    assert final.figures["toy.loops"].n == 2
    assert [c.params["loops"] for c, _, _ in toy.runs] == [7, 7]  # typed on the agent, from the row's suite
    assert {(c.path, c.target_address) for c, _, _ in toy.runs} == {("pod", "198.19.2.11")}
