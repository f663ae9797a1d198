"""The collector's database in the TUI's top bar: size, bound and time to full, as the collector
measured them (also in /metrics), with a warning style when it fills within a day or passes 90 % of
its bound. A real collector in this process; the test sets its storage figures."""

from __future__ import annotations

import sys
from pathlib import Path

import tui_kit as kit  # type: ignore[import-not-found]
from rich.text import Text

from cniscope.client.grpc_collector import CollectorClient
from cniscope.tui.app import CniscopeApp
from cniscope.tui.widgets.cluster_bar import ClusterBar

sys.path.insert(0, str(Path(__file__).parents[1]))
import pipeline_kit as pk  # type: ignore[import-not-found]  # noqa: E402

MIB = 1024 * 1024
DAY = 86_400.0
WARN = "bold yellow"


def _db(app: CniscopeApp) -> tuple[str, str]:
    """The bar's database part and its style ('' when the bar shows none)."""
    text = app.screen.query_one(ClusterBar).content
    assert isinstance(text, Text)
    for span in text.spans:
        part = text.plain[span.start:span.end]
        if part.startswith("db "):
            return part, str(span.style)
    at = text.plain.find("db ")
    return (text.plain[at:], "") if at >= 0 else ("", "")


async def test_the_bar_shows_the_database_size_bound_and_time_to_full(tmp_path: Path) -> None:
    c = await pk.start_collector(tmp_path, max_db_bytes=1536 * MIB)
    try:
        await pk.until(lambda: c.state.storage is not None, within=15, what="the first size check")
        assert c.state.storage is not None
        assert c.state.storage.max_bytes == 1536 * MIB
        assert c.state.storage.db_bytes > 0
        await c.upkeep.stop()  # from here on the test sets the figures
        c.state.set_storage(412 * MIB, 1536 * MIB, 3 * DAY)
        app = CniscopeApp(CollectorClient(pk.address(c)))
        async with app.run_test(size=(160, 20)) as pilot:
            # in the Watch snapshot
            await kit.until(lambda: _db(app)[0] != "", 10, pilot, "the database in the bar")
            assert _db(app) == ("db 412 MiB / 1.5 GiB · full in 3 d", "")
            # then live: past 90 % of the bound, not growing
            c.state.set_storage(1400 * MIB, 1536 * MIB, float("inf"))
            await kit.until(lambda: _db(app)[0].startswith("db 1.4 GiB"), 10, pilot, "the update")
            assert _db(app) == ("db 1.4 GiB / 1.5 GiB", WARN)
            # full within a day
            c.state.set_storage(600 * MIB, 1536 * MIB, 5 * 3600.0)
            await kit.until(lambda: "5 h" in _db(app)[0], 10, pilot, "the update")
            assert _db(app) == ("db 600 MiB / 1.5 GiB · full in 5 h", WARN)
    finally:
        await c.stop()
