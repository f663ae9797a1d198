"""The TUI, driven by Pilot against a real collector fed by real lab agents."""

from __future__ import annotations

import asyncio
import time

import pytest
from textual.widgets import Static

from cniscope.client.grpc_collector import CollectorClient
from cniscope.lab.lab import Lab
from cniscope.tui.app import CniscopeApp
from cniscope.tui.widgets.livetable import LiveTable

pytestmark = [pytest.mark.netns]


async def _until(cond: object, limit: float, pilot: object) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        await pilot.pause(0.1)  # type: ignore[attr-defined]
    raise AssertionError("condition not met in time")


async def test_rows_appear_and_a_probe_renders(cluster: Lab) -> None:
    app = CniscopeApp(CollectorClient(cluster.local_collector))
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one("#nodes", LiveTable)
        await _until(lambda: table.row_count == 3, 10, pilot)
        assert sorted(table.keys) == ["node1", "node2", "node3"]
        table.focus()
        await pilot.press("r")
        await _until(lambda: app.last_result is not None, 15, pilot)
        assert app.last_result is not None
        assert app.last_result.ok, app.last_result
        assert app.last_result.kind == "rtt"
        text = str(app.query_one("#probe", Static).render())
        assert "p50_us" in text
        assert "ok" in text
        await asyncio.sleep(0)
