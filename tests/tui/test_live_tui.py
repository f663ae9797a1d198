"""The TUI against a real collector fed by real lab agents: the form fires a real probe, and the app
rides out a collector restart."""

from __future__ import annotations

from pathlib import Path

import pytest
import tui_kit as kit  # type: ignore[import-not-found]
from textual.widgets import DataTable, Input

from cniscope.lab.lab import Lab
from cniscope.tui.app import CniscopeApp
from cniscope.tui.client import GrpcClusterClient
from cniscope.tui.screens.probe_form import ProbeForm
from cniscope.tui.widgets.cluster_bar import ClusterBar
from cniscope.tui.widgets.livetable import LiveTable

pytestmark = [pytest.mark.netns]


def _bar(app: CniscopeApp) -> str:
    return kit.text_of(app.screen.query_one(ClusterBar))  # type: ignore[no-any-return]


async def test_form_fires_a_probe_and_a_result_row_appears(cluster: Lab) -> None:
    app = CniscopeApp(GrpcClusterClient(cluster.local_collector))
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
    app = CniscopeApp(GrpcClusterClient(cluster.local_collector))
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
