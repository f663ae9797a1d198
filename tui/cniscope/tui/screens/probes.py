"""Probes: running and finished probes (fired here or by anyone), live; p opens the form."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from cniscope.core.render import probe_result_text
from cniscope.tui.cluster_model import THROUGHPUT_KEYS, ProbeEntry
from cniscope.tui.screens.screen_frame import CniscopeScreen
from cniscope.tui.widgets.bars import progress_bar

COLUMNS = (("id", "ID", 10), ("kind", "KIND", 7), ("pair", "FROM → TO", 22), ("path", "PATH", 7),
           ("state", "STATE", 8), ("progress", "PROGRESS", 15), ("summary", "RESULT", 40))
SUMMARY_KEYS = ("p50_us", "p99_us", "loss_pct", *THROUGHPUT_KEYS, "jitter_ms", "p99_ms", "qps", "failures")
STATE_STYLE = {"running": "yellow", "ok": "green", "failed": "red"}


def summary(e: ProbeEntry) -> Text:
    if e.result is None:
        return Text(e.message, style="dim")
    r = e.result
    if not r.ok:
        return Text(r.error, style="red")
    keys = [k for k in SUMMARY_KEYS if k in r.figures][:3]
    from cniscope.core.render import fmt_figure
    return Text("  ".join(f"{k.split('_')[0]} {fmt_figure(k, r.figures[k])}" for k in keys))


def is_mesh(e: ProbeEntry) -> bool:
    """A probe the agents' background mesh fired (its results still feed the Mesh screen)."""
    return e.probe_id.startswith("mesh-")


class ProbesScreen(CniscopeScreen):
    TITLE_TEXT = "Probes"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "app.probe_form", "New probe"),
        Binding("c", "clear_finished", "Clear finished"),
        Binding("m", "toggle_mesh", "Mesh probes"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[int, tuple[str | Text, ...]] = {}
        self._seen = -1
        self.show_mesh = False  # the agents' background mesh probes flood the list: hidden by default

    def compose_body(self) -> ComposeResult:
        table: DataTable[str | Text] = DataTable(id="probes", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static(Text("p: new probe (form) · results of probes fired anywhere appear here live", style="dim"),
                     id="probe-detail", classes="panel")

    def setup(self) -> None:
        table = self.query_one("#probes", DataTable)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)
        table.focus()

    def _cells(self, e: ProbeEntry) -> tuple[str | Text, ...]:
        pct = f"{progress_bar(e.fraction, 8)} {e.fraction * 100:3.0f}%"
        return (e.probe_id[-10:], e.kind, f"{e.source} → {e.target}", e.path,
                Text(e.state, style=STATE_STYLE.get(e.state, "")), pct, summary(e))

    def sync(self) -> None:
        m = self.model
        if m.probe_seq == self._seen:
            return
        self._seen = m.probe_seq
        table = self.query_one("#probes", DataTable)
        live = {e.uid: e for e in m.probes.values() if self.show_mesh or not is_mesh(e)}
        hidden = len(m.probes) - len(live)
        self.query_one("#probe-detail", Static).border_subtitle = (
            f"{hidden} background mesh probe{'s' if hidden != 1 else ''} hidden · m: show" if hidden
            else "m: hide background mesh probes" if self.show_mesh else "")
        for uid in [u for u in self._rows if u not in live]:
            table.remove_row(str(uid))
            del self._rows[uid]
        for uid, e in live.items():
            cells = self._cells(e)
            old = self._rows.get(uid)
            if old is None:
                table.add_row(*cells, key=str(uid))
            elif old != cells:
                for (key, _, _), new, was in zip(COLUMNS, cells, old, strict=True):
                    if new != was:
                        table.update_cell(str(uid), key, new)
            self._rows[uid] = cells
        table.sort("id", key=lambda _pid: 0)  # stable: insertion order, newest last
        self._show_detail()

    @on(DataTable.RowHighlighted, "#probes")
    def _highlight(self, ev: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        table = self.query_one("#probes", DataTable)
        if table.row_count == 0:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        entry = next((e for e in self.model.probes.values() if str(e.uid) == key), None)
        if entry is None:
            return
        panel = self.query_one("#probe-detail", Static)
        if entry.result is not None:
            panel.update(probe_result_text(entry.result))
        else:
            panel.update(f"{entry.kind} {entry.source} → {entry.target} ({entry.path}): "
                         f"{entry.state} {entry.fraction:.0%} {entry.message}")

    def action_toggle_mesh(self) -> None:
        self.show_mesh = not self.show_mesh
        self._seen = -1
        self.sync()

    def action_clear_finished(self) -> None:
        for pid in [p for p, e in self.model.probes.items() if e.finished]:
            del self.model.probes[pid]
        self.model.seq += 1
        self.model.probe_seq = self.model.seq
        self.sync()
