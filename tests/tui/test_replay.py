"""The TUI on recordings: a real 4-node lab and a generated 1,000-node cluster (no privileges)."""

from __future__ import annotations

import json
from pathlib import Path

import tui_kit as kit  # type: ignore[import-not-found]
from textual.widgets import DataTable, Input, Static

from cniscope.tui.screens.nodes import NodesScreen
from cniscope.tui.screens.probe_form import ProbeForm


def _big_statuses() -> dict[str, str]:
    """Final status per node name, read straight from the generated recording (the ground truth)."""
    out: dict[str, str] = {}
    for line in kit.read_lines(kit.BIG):
        ev = json.loads(line)["event"]
        if "node" in ev:
            out[ev["node"]["node"]] = ev["node"]["status"]
    return out


def _cpu(line_node: dict[str, object]) -> float:
    figs = line_node["figures"]
    assert isinstance(figs, dict)
    return float(figs["cni_cpu_millicores{process=cilium-agent}"])


async def test_thousand_nodes_replay_sort_and_filter() -> None:
    statuses = _big_statuses()
    app = kit.replay_app(kit.BIG)
    async with app.run_test(size=(160, 50)) as pilot:
        await kit.settle(pilot)
        screen = app.screen
        assert isinstance(screen, NodesScreen)
        table = screen.table
        assert table.row_count == 1000
        assert screen.visible_nodes() == sorted(statuses)
        # sort: s cycles node → status → CNI CPU (highest first); a new order starts at its top row
        await pilot.press("pagedown")
        assert table.cursor_row > 0
        await pilot.press("s")
        assert table.cursor_row == 0
        assert screen.visible_nodes()[: len([s for s in statuses.values() if s == "NODE_STATUS_GONE"])] == sorted(
            n for n, s in statuses.items() if s == "NODE_STATUS_GONE")
        await pilot.press("s")
        latest = {}
        for line in kit.read_lines(kit.BIG):
            ev = json.loads(line)["event"]
            if "node" in ev:
                latest[ev["node"]["node"]] = _cpu(ev["node"])
        want = sorted(latest, key=lambda n: (latest[n], n), reverse=True)
        assert screen.visible_nodes()[:20] == want[:20]
        # filter: '/' then text; only the gone nodes stay
        await pilot.press("slash")
        for ch in "gone":
            await pilot.press(ch)
        await pilot.pause()
        gone = {n for n, s in statuses.items() if s == "NODE_STATUS_GONE"}
        assert set(screen.visible_nodes()) == gone
        assert 0 < len(gone) < 1000
        await pilot.press("escape")
        await pilot.pause()
        assert table.row_count == 1000


async def test_lab_recording_fills_every_screen() -> None:
    app = kit.replay_app(kit.LAB)
    async with app.run_test(size=(200, 60)) as pilot:
        await kit.settle(pilot)
        m = app.model
        assert sorted(m.nodes) == ["node1", "node2", "node3", "node4"]
        # every ordered pair was measured on both paths in the recorded sweep
        for path in ("host", "pod"):
            assert sum(1 for (k, p, *_rest) in m.pairs if (k, p) == ("rtt", path)) == 12
        assert all(0 < h[-1].figures["p50_us"] < 5000 for h in m.pairs.values())
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "NodeDetailScreen"
        text = kit.text_of(app.screen.query_one("#sec-readiness", Static))
        assert "bandwidth_manager" in text
        assert "fq" in text
        await pilot.press("escape", "3")
        await pilot.pause()
        app.sync_now()
        await pilot.pause()
        table = app.screen.query_one("#probes", DataTable)
        mesh = [e for e in m.probes.values() if e.probe_id.startswith("mesh-")]
        assert mesh, "the recording has background mesh probes"
        # the agents' background mesh is hidden until 'm' shows it
        assert table.row_count == len(m.probes) - len(mesh) >= 24
        assert f"{len(mesh)} background mesh probes hidden" in str(
            app.screen.query_one("#probe-detail", Static).border_subtitle)
        await pilot.press("m")
        await pilot.pause()
        assert table.row_count == len(m.probes)


async def test_probe_form_uses_the_api_bounds() -> None:
    app = kit.replay_app(kit.LAB)
    async with app.run_test(size=(120, 40)) as pilot:
        await kit.settle(pilot)
        await pilot.press("p")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, ProbeForm)
        form.query_one("#p-count", Input).value = "5000"   # rtt count cap is 1000
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form
        assert "above the cap 1000" in kit.text_of(form.query_one("#form-error", Static))
        form.query_one("#p-count", Input).value = "3"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not isinstance(app.screen, ProbeForm)
        await kit.until(lambda: app.last_result is not None, 5, pilot, "replayed probe result")
        assert app.last_result is not None
        assert app.last_result.kind == "rtt"


async def test_runs_comparison_marks_noise_and_direction(tmp_path: Path) -> None:
    app = kit.replay_app(kit.LAB, extra=kit.RUNS, tmp=tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await kit.settle(pilot)
        await pilot.press("4")
        await kit.until(lambda: app.screen.query_one("#runs", DataTable).row_count == 2, 5, pilot, "runs")
        await pilot.press("space", "down", "space", "c")
        await pilot.pause()
        text = kit.text_of(app.screen.query_one("#compare", Static))
        assert "within noise" in text          # TCP 12.41 → 12.40 Gbit/s
        assert "-35.9%" in text                # RTT p50 4894 → 3135 µs


async def test_runs_screen_without_runs_api() -> None:
    app = kit.replay_app(kit.LAB)
    async with app.run_test(size=(120, 40)) as pilot:
        await kit.settle(pilot)
        await pilot.press("4")
        await pilot.pause(0.2)
        assert "no runs API on this collector" in kit.text_of(app.screen.query_one("#compare", Static))


async def test_command_palette_lists_every_key_action() -> None:
    app = kit.replay_app(kit.LAB)
    async with app.run_test(size=(120, 40)) as pilot:
        await kit.settle(pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for b in [*app.BINDINGS, *app.screen.BINDINGS]:
            desc = getattr(b, "description", "")
            if desc and getattr(b, "show", True):
                assert desc in titles, desc


async def test_header_click_sorts_and_a_second_click_reverses() -> None:
    app = kit.replay_app(kit.LAB)
    async with app.run_test(size=(160, 40)) as pilot:
        await kit.settle(pilot)
        screen = app.screen
        assert isinstance(screen, NodesScreen)
        table = screen.table
        i = [c.key for c in table.columns].index("rtt")
        x = sum(1 + w for w in table.widths[:i]) + 2           # inside the RTT p50 header
        rtt = {n: app.model.rtt_p50_to_peers(n) or 0.0 for n in app.model.nodes}
        assert len(set(rtt.values())) >= 3
        await pilot.click(type(table), offset=(x, 0))
        assert screen.sort_key == "rtt"
        assert screen.visible_nodes() == sorted(rtt, key=lambda n: (rtt[n], n), reverse=True)
        assert "RTT p50 ▼" in table.render_line(0).text
        await pilot.click(type(table), offset=(x, 0))
        assert screen.visible_nodes() == sorted(rtt, key=lambda n: (rtt[n], n))
        assert "RTT p50 ▲" in table.render_line(0).text


async def test_mesh_opens_on_the_path_with_measurements_until_a_person_chooses() -> None:
    """The generated cluster's mesh has pod-path RTTs only: the screen opens on them instead of an
    empty host-path matrix; once 'h' is pressed the chosen path stays, empty or not."""
    from cniscope.tui.screens.mesh import MeshScreen

    app = kit.replay_app(kit.BIG)
    async with app.run_test(size=(160, 50)) as pilot:
        await kit.settle(pilot)
        await pilot.press("2")
        await kit.settle(pilot)
        screen = app.screen
        assert isinstance(screen, MeshScreen)
        assert screen.path == "pod"
        await pilot.press("h")
        await kit.settle(pilot)
        assert screen.path == "host"
        await kit.settle(pilot)
        assert screen.path == "host"


async def test_keys_typed_right_after_slash_reach_the_filter() -> None:
    """'/gone' arriving in one burst (a paste, tmux send-keys, a fast typist over ssh): every letter
    is queued before the filter box could take focus, yet all of them land in the filter instead of
    being taken by the table's bindings."""
    from textual import events

    app = kit.replay_app(kit.BIG)
    async with app.run_test(size=(160, 50)) as pilot:
        await kit.settle(pilot)
        for ch in "/gone":
            app.post_message(events.Key("slash" if ch == "/" else ch, ch))
        await pilot.pause()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, NodesScreen)
        assert screen.query_one("#filter", Input).value == "gone"
        assert screen.filter_text == "gone"
        assert screen.visible_nodes() == sorted(n for n, s in _big_statuses().items() if s == "NODE_STATUS_GONE")


async def test_a_refresh_tick_while_the_screen_is_torn_down_is_skipped() -> None:
    """The refresh timer can fire while the app shuts down and the screen's widgets are already gone
    (seen on a loaded machine at the end of a Pilot test): the tick draws nothing instead of failing
    the app with NoMatches."""
    from cniscope.tui.widgets.cluster_bar import ClusterBar

    app = kit.replay_app(kit.LAB)
    async with app.run_test(size=(160, 40)) as pilot:
        await kit.settle(pilot)
        screen = app.screen
        assert isinstance(screen, NodesScreen)
        await screen.query_one(ClusterBar).remove()
        app.sync_now()              # raised NoMatches before the screen skipped a tick without its bar
        await pilot.pause()
        assert app.return_code is None
        assert app.is_running
