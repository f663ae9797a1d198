"""The TUI against a real collector fed by real lab agents: the form fires a real probe, the app
rides out a collector restart, and runs stored through the Runs API show up and compare."""

from __future__ import annotations

from pathlib import Path

import pytest
import tui_kit as kit  # type: ignore[import-not-found]
from textual.widgets import DataTable, Input, Static

from cniscope.api.v1 import runs_pb2, runs_pb2_grpc
from cniscope.client.grpc_collector import CollectorClient
from cniscope.client.replay_collector import ReplayClient
from cniscope.core import grpcutil
from cniscope.lab.lab import Lab
from cniscope.tui.app import CniscopeApp
from cniscope.tui.run_compare import fmt_value
from cniscope.tui.screens.probe_form import ProbeForm
from cniscope.tui.screens.runs import RunsScreen
from cniscope.tui.widgets.cluster_bar import ClusterBar
from cniscope.tui.widgets.livetable import LiveTable

pytestmark = [pytest.mark.netns]


def _bar(app: CniscopeApp) -> str:
    return kit.text_of(app.screen.query_one(ClusterBar))  # type: ignore[no-any-return]


async def test_form_fires_a_probe_and_a_result_row_appears(cluster: Lab) -> None:
    app = CniscopeApp(CollectorClient(cluster.local_collector))
    async with app.run_test(size=(160, 45)) as pilot:
        table = app.screen.query_one("#nodes", LiveTable)
        await kit.until(lambda: table.row_count == 3, 10, pilot, "three node rows")
        assert "nodes 3/3" in _bar(app)
        assert "connected" in _bar(app)
        await pilot.press("p")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, ProbeForm)
        form.query_one("#p-count", Input).value = "5"
        form.query_one("#p-interval", Input).value = "0.05"
        await pilot.press("ctrl+s")
        await pilot.press("3")
        await kit.until(lambda: any(e.state != "running" and e.mine for e in app.model.probes.values()),
                        20, pilot, "a finished probe")
        mine = [e for e in app.model.probes.values() if e.mine]
        assert len(mine) == 1
        r = mine[0].result
        assert r is not None, r
        assert r.ok, r
        assert r.source_node == "node1"
        assert r.target_node == "node2"
        assert r.params["count"] == "5"
        assert 0 < r.figures["p50_us"] < 10_000
        app.sync_now()
        await pilot.pause()
        rows = app.screen.query_one("#probes", DataTable)
        cells = [str(c) for c in rows.get_row(str(mine[0].uid))]
        assert "ok" in cells
        assert "node1 → node2" in cells


async def test_collector_restart_shows_disconnected_then_recovers(cluster: Lab, tmp_path: Path) -> None:
    app = CniscopeApp(CollectorClient(cluster.local_collector))
    async with app.run_test(size=(120, 40)) as pilot:
        await kit.until(lambda: app.model.counts() == (3, 3), 10, pilot, "three connected nodes")
        assert cluster.stop_role("collector")
        await kit.until(lambda: not app.model.connected, 10, pilot, "disconnected state")
        app.sync_now()
        await pilot.pause()
        assert "disconnected" in _bar(app)
        assert any("collector unreachable" in e.message for e in app.model.log)
        cluster.start_cluster(db=tmp_path / "collector.db", sample_interval=0.5)
        await kit.until(lambda: app.model.connected and app.model.counts() == (3, 3), 30, pilot,
                        "reconnected with three nodes")
        app.sync_now()
        await pilot.pause()
        assert "● connected" in _bar(app)
        assert app.screen.query_one("#nodes", LiveTable).row_count == 3


async def _stored_run(address: str, label: str) -> runs_pb2.Run:
    """A real suite run through the collector's Runs API: RTT and the NAT census, node1 → node2, once."""
    req = runs_pb2.StartRunRequest(label=label, suite="quick", repeat=1, pairs="node1:node2", only=["rtt", "census"])
    async with grpcutil.insecure_channel(address) as ch:
        final = None
        async for upd in runs_pb2_grpc.RunsStub(ch).StartRun(req, timeout=60):
            if upd.WhichOneof("body") == "run":
                final = upd.run
    assert final is not None
    assert final.status == runs_pb2.RUN_STATUS_DONE, final
    return final


async def test_runs_stored_through_the_api_appear_and_compare(cluster: Lab, tmp_path: Path) -> None:
    before = await _stored_run(cluster.local_collector, "before")
    after = await _stored_run(cluster.local_collector, "after")
    recording = tmp_path / "rec.jsonl"
    app = CniscopeApp(CollectorClient(cluster.local_collector, record=str(recording)))
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("4")
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        table = screen.query_one("#runs", DataTable)
        await kit.until(lambda: table.row_count == 2, 10, pilot, "two stored runs")
        shown = {r.run_id: r for r in screen.runs}
        assert set(shown) == {before.run_id, after.run_id}
        for stored in (before, after):
            r = shown[stored.run_id]
            assert (r.label, r.status) == (stored.label, "done")
            assert r.fingerprint == dict(stored.fingerprint)
            assert r.figures["rtt.p50"].median == stored.figures["rtt.p50"].median > 0
        rows = {str(table.get_row_at(i)[1]): [str(c) for c in table.get_row_at(i)] for i in range(2)}
        assert rows[after.run_id][2:4] == ["after", "done"]
        await pilot.press("space", "down", "space", "c")
        await pilot.pause()
        text = kit.text_of(screen.query_one("#compare", Static))
        rtt = next(line for line in text.splitlines() if "RTT p50" in line)
        first, second = (shown[rid] for rid in screen.marked)
        base, other = first.figures["rtt.p50"], second.figures["rtt.p50"]
        assert fmt_value("rtt.p50", base.median) in rtt
        assert fmt_value("rtt.p50", other.median) in rtt
        # the noise rule, written out: min..max ranges that overlap while either has a spread, or a
        # change of at most 1 % of the baseline, is noise; otherwise the relative change is shown
        overlap = other.lo <= base.hi and base.lo <= other.hi and (base.spread > 0 or other.spread > 0)
        if overlap or abs(other.median - base.median) <= 0.01 * abs(base.median):
            assert "within noise" in rtt, (base, other, rtt)
            assert "%" not in rtt, (base, other, rtt)
        else:
            assert f"{(other.median - base.median) / base.median * 100:+.1f}%" in rtt, (base, other, rtt)
            assert "within noise" not in rtt, (base, other, rtt)
        assert "iptables NAT rules" in text
    replay = ReplayClient(recording)                    # --record keeps the runs for --replay
    replay.load()
    assert replay.runs is not None
    assert {r.run_id: r.figures for r in replay.runs} == {r.run_id: r.figures for r in screen.runs}
