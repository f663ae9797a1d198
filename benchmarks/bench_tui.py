"""TUI benchmark: 1,000 nodes at 2 Hz, first paint, and a 50×50 mesh redraw.

Run: .venv/bin/python benchmarks/bench_tui.py

A synthetic in-process client (no collector: this measures the TUI alone) feeds 1,000 nodes shaped
like a Cilium cluster (tests/fixtures/recordings/generate.py), then a fresh sample for every node
every 0.5 s. Measured, headless, in one process:

- first paint: app start → 1,000 rows in the table and a frame rendered (budget 1 s);
- steady CPU at 2 Hz: this process's CPU time / wall time over a window with updates streaming
  (budget 15% of one core), against two baselines from the same run: the same app idle (no
  updates) and a naive screen that rebuilds the whole table on every tick;
- heatmap: a 50×50 RTT mesh rendered to lines at 200 columns, median of 30 (budget 50 ms).
"""

from __future__ import annotations

import asyncio
import io
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "recordings"))

from generate import _node  # type: ignore[import-not-found]  # noqa: E402

from cniscope.api.v1 import cluster_pb2, common_pb2  # noqa: E402
from cniscope.tui.app import CniscopeApp  # noqa: E402
from cniscope.tui.client import ConnectionState  # noqa: E402
from cniscope.tui.runs import RunSummary  # noqa: E402
from cniscope.tui.screens.nodes import NodesScreen  # noqa: E402
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


class NaiveNodesScreen(NodesScreen):
    """Baseline: redraw the whole table on every tick (what the real screen avoids)."""

    def sync(self) -> None:
        if self.model.seq != self._seen:
            self._cells.clear()
            self.query_one("#nodes").clear()  # type: ignore[attr-defined]
            super().sync()


async def measure(live: bool, naive: bool = False) -> dict[str, float]:
    client = SyntheticClient(live)
    app = CniscopeApp(client)
    if naive:
        app.MODES = {**CniscopeApp.MODES, "nodes": NaiveNodesScreen}  # type: ignore[misc]
    t0 = time.perf_counter()
    async with app.run_test(size=(200, 60)) as pilot:
        screen = app.screen
        assert isinstance(screen, NodesScreen)
        table: Any = screen.query_one("#nodes")
        while table.row_count < N:
            await pilot.pause(0.01)
        await pilot.pause()
        first_paint = time.perf_counter() - t0
        await pilot.pause(1.0)
        ticks0 = client.ticks
        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(WINDOW_S)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        assert table.row_count == N
        return {"first_paint_s": first_paint, "cpu_share": cpu / wall, "ticks": client.ticks - ticks0}


def heatmap_ms() -> float:
    hm = Heatmap()
    names = [f"node{i:02d}" for i in range(50)]
    cells = {(a, b): Cell(50 + (i * 31 + j * 17) % 400, (i + j) % 700)
             for i, a in enumerate(names) for j, b in enumerate(names) if a != b}
    console = Console(width=200, file=io.StringIO(), color_system="truecolor")
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        hm.set_data(names, cells, fmt=lambda v: f"{v:.0f}", unit="RTT p50 µs", higher_better=False)
        lines = console.render_lines(hm.render_text(), console.options.update_width(200), pad=False)
        times.append(time.perf_counter() - t0)
        assert len(lines) >= 52
    return statistics.median(times) * 1000


def main() -> int:
    live = asyncio.run(measure(live=True))
    idle = asyncio.run(measure(live=False))
    naive = asyncio.run(measure(live=True, naive=True))
    hm = heatmap_ms()
    print(f"nodes: {N}, window {WINDOW_S:.0f} s, updates {HZ:.0f} Hz ({live['ticks']:.0f} rounds of {N} node events)")
    print(f"first paint of {N} nodes:      {live['first_paint_s'] * 1000:7.0f} ms   (budget 1000 ms)")
    print(f"CPU at 2 Hz, cell updates:     {live['cpu_share'] * 100:7.1f} %    of one core (budget 15 %)")
    print(f"CPU idle, same app:            {idle['cpu_share'] * 100:7.1f} %")
    print(f"CPU at 2 Hz, table rebuilds:   {naive['cpu_share'] * 100:7.1f} %    (naive baseline)")
    print(f"ratio naive / cell updates:    {naive['cpu_share'] / max(live['cpu_share'], 1e-9):7.2f} x")
    print(f"50x50 heatmap redraw (median): {hm:7.1f} ms   (budget 50 ms)")
    ok = live["first_paint_s"] <= 1.0 and live["cpu_share"] <= 0.15 and hm <= 50
    print("PASS" if ok else "OVER BUDGET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
