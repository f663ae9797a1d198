"""Mesh: N×N heatmap of RTT p50 (or throughput) per node pair; selecting a cell shows its history.

Each heatmap shows its probe kind's first headline figure, with the unit and direction the probe
table (``probekinds``) declares for it."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from cniscope.api.v1 import common_pb2
from cniscope.core.errors import CniscopeError
from cniscope.core.probekinds import spec_for
from cniscope.core.probespec import HIGHER
from cniscope.core.render import fmt_figure, headline_keys
from cniscope.tui.screens.screen_frame import CniscopeScreen
from cniscope.tui.widgets.heatmap import Cell, Heatmap

MESH_KINDS = ("rtt", "tcp")  # the probe kinds whose heatmaps 't' cycles through
SWEEP_MAX_PAIRS = 400
MAX_SIDE = 60  # larger clusters show only the nodes with measurements, up to this many


def _fmt_us(v: float) -> str:
    return f"{v:.0f}" if v < 10_000 else f"{v / 1000:.0f}k"


class MeshScreen(CniscopeScreen):
    TITLE_TEXT = "Mesh"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "toggle_metric", "RTT/TCP"),
        Binding("h", "toggle_path", "host/pod"),
        Binding("r", "probe_pair", "Probe pair"),
        Binding("a", "sweep", "RTT all pairs"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.metric = "rtt"
        self.path = "host"
        self.path_chosen = False  # until a person toggles it, the screen shows a path that has data
        self._seen = (-1, "", "", -1)
        self.selected: tuple[str, str] | None = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="mesh-body"):
            with VerticalScroll(id="mesh-left"):
                yield Heatmap(id="heatmap")
                yield Static("", id="mesh-note")
            yield Static(id="pair", classes="panel")

    def setup(self) -> None:
        self.query_one(Heatmap).focus()

    def sync(self) -> None:
        m = self.model
        now_bucket = self.capp.now_ns() // 10**10  # ageing shows even when nothing new arrives
        key = (m.pair_seq + len(m.nodes), self.metric, self.path, now_bucket)
        if key == self._seen:
            return
        self._seen = key
        kind = self.metric
        head = spec_for(kind).figures[0]
        if not self.path_chosen:
            paths = {path for (k, path, _, _), hist in m.pairs.items() if k == kind and hist}
            if self.path not in paths and paths:  # e.g. the background mesh measures the pod path only
                self.path = "pod" if "pod" in paths else sorted(paths)[0]
        now = self.capp.now_ns()
        cells: dict[tuple[str, str], Cell] = {}
        for (k, path, src, dst), hist in m.pairs.items():
            if k != kind or path != self.path or not hist:
                continue
            r = hist[-1]
            value = r.figures.get(head.name) if r.ok else None
            cells[(src, dst)] = Cell(value, max(0.0, (now - (r.finished_unix_nano or now)) / 1e9))
        names = sorted(m.nodes)
        if len(names) > MAX_SIDE:
            measured = sorted({n for pair in cells for n in pair})
            names = measured[:MAX_SIDE]
            self.notify_once(f"{len(m.nodes)} nodes: the mesh shows the {len(names)} with measurements")
        fmt = _fmt_us if head.unit == "µs" else (lambda v: f"{v:.1f}")
        self.query_one(Heatmap).set_data(names, cells, fmt=fmt, unit=f"{head.title} {head.unit} ({self.path} path)",
                                         higher_better=head.better == HIGHER)
        self._show_pair()

    def notify_once(self, text: str) -> None:
        if text != getattr(self, "_noted", ""):
            self._noted = text
            self.query_one("#mesh-note", Static).update(Text(text, style="dim"))

    @on(Heatmap.Selected)
    def _selected(self, ev: Heatmap.Selected) -> None:
        self.selected = (ev.source, ev.target)
        self._show_pair()

    def _show_pair(self) -> None:
        panel = self.query_one("#pair", Static)
        panel.border_title = "Pair history"
        if self.selected is None or self.selected[0] == self.selected[1]:
            panel.update(Text("select a pair with the arrow keys\nr: probe it now · a: RTT across all pairs",
                              style="dim"))
            return
        src, dst = self.selected
        kind = self.metric
        hist = list(self.model.pairs.get((kind, self.path, src, dst), ()))
        out = Table(box=None, expand=True, header_style="bold dim", title=f"{kind} {src} → {dst} ({self.path})")
        for h in ("#", "result", "figures"):
            out.add_column(h, overflow="fold")
        if not hist:
            out.add_row("", Text("no results yet — press r", style="dim"), "")
        for n, r in enumerate(reversed(hist[-15:]), 1):
            if r.ok:
                keys = headline_keys(kind, r.figures)
                out.add_row(str(n), Text("ok", style="green"), "  ".join(fmt_figure(k, r.figures[k]) for k in keys))
            else:
                out.add_row(str(n), Text("failed", style="red"), Text(r.error, style="dim"))
        panel.update(out)

    def action_toggle_metric(self) -> None:
        self.metric = MESH_KINDS[(MESH_KINDS.index(self.metric) + 1) % len(MESH_KINDS)]
        self.sync()

    def action_toggle_path(self) -> None:
        self.path = "pod" if self.path == "host" else "host"
        self.path_chosen = True
        self.sync()

    def action_probe_pair(self) -> None:
        if self.selected is None or self.selected[0] == self.selected[1]:
            self.notify("select a pair of two different nodes first", severity="warning")
            return
        src, dst = self.selected
        kind = self.metric
        self.capp.fire_probe(common_pb2.ProbeRequest(kind=kind, source_node=src, target_node=dst, path=self.path,
                                                     params=spec_for(kind).short_run().to_wire()))

    def action_sweep(self) -> None:
        names = sorted(n for n, st in self.model.nodes.items() if st.status == 1)
        pairs = [(a, b) for a in names for b in names if a != b]
        if not pairs:
            self.notify("need at least two connected nodes", severity="warning")
            return
        if len(pairs) > SWEEP_MAX_PAIRS:
            self.notify(f"{len(pairs)} pairs is more than {SWEEP_MAX_PAIRS}; probe pairs one by one",
                        severity="warning")
            return
        self.notify(f"RTT sweep over {len(pairs)} pairs ({self.path} path)")
        self._sweep(pairs, self.path)

    @work(group="sweep", exclusive=True)
    async def _sweep(self, pairs: list[tuple[str, str]], path: str) -> None:
        failures = 0
        for src, dst in pairs:
            req = common_pb2.ProbeRequest(kind="rtt", source_node=src, target_node=dst, path=path,
                                          params={"count": "5", "interval": "0.02"})
            try:
                await self.capp.run_probe(req)
            except CniscopeError:
                failures += 1
        self.notify(f"sweep done: {len(pairs) - failures}/{len(pairs)} pairs measured")
