"""TUI benchmark: 1,000 nodes at 2 Hz, first paint, and a 50×50 mesh redraw.

Run: .venv/bin/python benchmarks/bench_tui.py

A synthetic in-process client (no collector: this measures the TUI alone) feeds 1,000 nodes shaped
like a Cilium cluster (tests/fixtures/recordings/generate.py), then a fresh sample for every node
every 0.5 s. Measured, headless, in one process:

- first paint: app start → 1,000 rows in the table and a frame rendered, wall and CPU time, median
  of the run's three starts of the app (budget 1 s);
- steady CPU at 2 Hz: this process's CPU time / wall time over a window with updates streaming
  (budget 15% of one core), sorted by name and sorted by CNI CPU (rows reorder every round); and
  how many rows the table drew per round against how many are on screen;
- baselines from the same run: the same app idle (no updates), and the Nodes table as Textual's
  DataTable with changed cells updated in place (first paint and CPU);
- heatmap: a 50×50 RTT mesh rendered to lines at 200 columns, median of 30, wall and CPU time
  (budget 50 ms).

PASS is judged on CPU time: on a shared machine the wall time also holds other processes' turns.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from google.protobuf import json_format
from rich.console import Console
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "recordings"))

from generate import _node  # type: ignore[import-not-found]  # noqa: E402

from cniscope.api.v1 import cluster_pb2, common_pb2  # noqa: E402
from cniscope.client.client_protocol import ConnectionState  # noqa: E402
from cniscope.tui.app import CniscopeApp  # noqa: E402
from cniscope.tui.run_compare import RunSummary  # noqa: E402
from cniscope.tui.screens.nodes import NodesScreen  # noqa: E402
from cniscope.tui.screens.nodes_columns import COLUMNS  # noqa: E402
from cniscope.tui.screens.nodes_columns import Cell as TableCell  # noqa: E402
from cniscope.tui.widgets.heatmap import Cell, Heatmap  # noqa: E402

N = 1000
WINDOW_S = 6.0
HZ = 2.0


class SyntheticClient:
    """Serves N nodes, then (when ``live``) a new sample for every node every 1/HZ seconds."""

    def __init__(self, live: bool) -> None:
        import random

        rnd = random.Random(7)
        self.address = "synthetic"
        self.live = live
        self.nodes = [json_format.ParseDict(_node(i, rnd, 0), cluster_pb2.NodeState()) for i in range(N)]
        self.ticks = 0

    async def events(self) -> AsyncIterator[cluster_pb2.ClusterEvent | ConnectionState]:
        yield ConnectionState(True)
        for st in self.nodes:
            yield cluster_pb2.ClusterEvent(node=st)
        yield cluster_pb2.ClusterEvent(snapshot_done=cluster_pb2.SnapshotDone(collector_address="synthetic"))
        while True:
            await asyncio.sleep(1 / HZ)
            if not self.live:
                continue
            self.ticks += 1
            for i, st in enumerate(self.nodes):
                st.figures["cni_cpu_millicores{process=cilium-agent}"] = 20 + (i * 7 + self.ticks * 13) % 80
                st.figures["agent_cpu_millicores"] = (i + self.ticks) % 9
                st.last_seen_unix_nano += 500_000_000
                yield cluster_pb2.ClusterEvent(node=st)

    def run_probe(self, req: common_pb2.ProbeRequest) -> AsyncIterator[cluster_pb2.ProbeUpdate]:
        raise NotImplementedError

    async def probe_history(self, kind: str, src: str, dst: str, limit: int = 50) -> list[common_pb2.ProbeResult]:
        return []

    async def list_runs(self) -> list[RunSummary]:
        return []

    async def close(self) -> None:
        return None


class DataTableNodesScreen(NodesScreen):
    """Baseline: the Nodes table as Textual's DataTable, changed cells updated in place (update_cell)."""

    def compose_body(self) -> ComposeResult:
        yield DataTable(id="nodes", cursor_type="row", zebra_stripes=True)

    def setup(self) -> None:
        table: DataTable[TableCell] = self.query_one("#nodes", DataTable)
        for c in COLUMNS:
            table.add_column(c.label, key=c.key, width=24 if c.key == "node" else c.width)
        self._drawn: dict[str, list[TableCell]] = {}
        table.focus()

    def sync(self) -> None:
        m = self.model
        if m.seq == self._seen:
            return
        table: DataTable[TableCell] = self.query_one("#nodes", DataTable)
        changed = [n for n, v in m.node_seq.items() if v > self._seen]
        self._seen = m.seq
        for n in changed:
            cells = self._row(n)
            old = self._drawn.get(n)
            if old is None:
                table.add_row(*cells, key=n)
            else:
                for c, a, b in zip(COLUMNS, old, cells, strict=True):
                    if a != b:
                        table.update_cell(n, c.key, b)
            self._drawn[n] = cells


class DataTableApp(CniscopeApp):
    CSS_PATH = str(Path(sys.modules[CniscopeApp.__module__].__file__ or "").with_name("app.tcss"))
    MODES: ClassVar[dict[str, type[Screen[None]]]] = {**CniscopeApp.MODES, "nodes": DataTableNodesScreen}


async def measure(live: bool, datatable: bool = False, sort_keys: tuple[str, ...] = ()) -> dict[str, float]:
    client = SyntheticClient(live)
    app = DataTableApp(client) if datatable else CniscopeApp(client)
    t0, p0 = time.perf_counter(), time.process_time()
    async with app.run_test(size=(200, 60)) as pilot:
        screen = app.screen
        assert isinstance(screen, DataTableNodesScreen if datatable else NodesScreen)
        table: Any = screen.query_one("#nodes")
        while table.row_count < N:
            await pilot.pause(0.01)
        await pilot.pause()
        first_paint, first_paint_cpu = time.perf_counter() - t0, time.process_time() - p0
        await pilot.press(*sort_keys)
        await pilot.pause(1.0)
        ticks0, drawn0 = client.ticks, getattr(table, "rows_drawn", 0)
        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(WINDOW_S)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        assert table.row_count == N
        ticks = client.ticks - ticks0
        return {"first_paint_s": first_paint, "first_paint_cpu_s": first_paint_cpu, "cpu_share": cpu / wall,
                "ticks": ticks,
                "drawn_per_tick": (getattr(table, "rows_drawn", 0) - drawn0) / max(ticks, 1),
                "on_screen": len(table.on_screen()) if hasattr(table, "on_screen") else 0}


def heatmap_ms() -> tuple[float, float]:
    """Median wall and CPU time of one redraw; the CPU time does not count other processes' turns."""
    hm = Heatmap()
    names = [f"node{i:02d}" for i in range(50)]
    cells = {(a, b): Cell(50 + (i * 31 + j * 17) % 400, (i + j) % 700)
             for i, a in enumerate(names) for j, b in enumerate(names) if a != b}
    console = Console(width=200, file=io.StringIO(), color_system="truecolor")
    wall, cpu = [], []
    for _ in range(30):
        t0, c0 = time.perf_counter(), time.thread_time()
        hm.set_data(names, cells, fmt=lambda v: f"{v:.0f}", unit="RTT p50 µs", higher_better=False)
        lines = console.render_lines(hm.render_text(), console.options.update_width(200), pad=False)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        assert len(lines) >= 52
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def main() -> int:
    live = asyncio.run(measure(live=True))
    by_cpu = asyncio.run(measure(live=True, sort_keys=("s", "s")))
    idle = asyncio.run(measure(live=False))
    base = asyncio.run(measure(live=True, datatable=True))
    hm, hm_cpu = heatmap_ms()
    print(f"nodes: {N}, window {WINDOW_S:.0f} s, updates {HZ:.0f} Hz ({live['ticks']:.0f} rounds of {N} node events)")
    starts = (live, by_cpu, idle)  # three app starts with the same table: the median of them
    paint = statistics.median(r["first_paint_s"] for r in starts)
    paint_cpu = statistics.median(r["first_paint_cpu_s"] for r in starts)
    print(f"first paint of {N} nodes:      {paint * 1000:7.0f} ms   (budget 1000 ms), "
          f"CPU time {paint_cpu * 1000:.0f} ms (median of 3 starts)")
    print(f"CPU at 2 Hz, LiveTable:        {live['cpu_share'] * 100:7.1f} %    of one core (budget 15 %)")
    print(f"CPU at 2 Hz, sorted by CNI CPU:{by_cpu['cpu_share'] * 100:7.1f} %    (rows reorder every round)")
    print(f"rows drawn per round:          {live['drawn_per_tick']:7.1f}      ({live['on_screen']} rows on screen)")
    print(f"CPU idle, same app:            {idle['cpu_share'] * 100:7.1f} %")
    print(f"first paint, DataTable:        {base['first_paint_s'] * 1000:7.0f} ms   (baseline), "
          f"CPU time {base['first_paint_cpu_s'] * 1000:.0f} ms")
    print(f"CPU at 2 Hz, DataTable:        {base['cpu_share'] * 100:7.1f} %    (baseline: update_cell in place)")
    print(f"ratio DataTable / LiveTable:   {base['cpu_share'] / max(live['cpu_share'], 1e-9):7.2f} x CPU, "
          f"{base['first_paint_cpu_s'] / max(paint_cpu, 1e-9):.2f} x first-paint CPU time")
    print(f"50x50 heatmap redraw (median): {hm:7.1f} ms   (budget 50 ms), CPU time {hm_cpu:.1f} ms")
    ok = paint_cpu <= 1.0 and max(live["cpu_share"], by_cpu["cpu_share"]) <= 0.15 and hm_cpu <= 50
    print("PASS" if ok else "OVER BUDGET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
