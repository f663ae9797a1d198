"""Runs: stored runs; mark two or more with space and compare them side by side."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from cniscope.client.run_summary import RunSummary, RunsUnavailable
from cniscope.core.benchmetrics import BETTER, NA, NOISE, WORSE
from cniscope.tui.run_compare import comparison, fmt_value, title
from cniscope.tui.screens.screen_frame import CniscopeScreen

VERDICT_STYLE = {BETTER: "bold green", WORSE: "bold red", NOISE: "dim", NA: "dim"}
STATUS_STYLE = {"done": "green", "running": "cyan", "cancelled": "yellow", "failed": "red"}


def comparison_table(runs: list[RunSummary]) -> Table:
    t = Table(expand=True, header_style="bold", title="comparison (deltas against the first run)")
    t.add_column("figure")
    for n, r in enumerate(runs):
        t.add_column(r.label, justify="right")
        if n:
            t.add_column("Δ", justify="right")
    for name, vals, deltas in comparison(runs):
        row: list[str | Text] = [title(name)]
        for n, v in enumerate(vals):
            row.append(fmt_value(name, v.median) if v is not None else "-")
            if n:
                d = deltas[n - 1]
                if d.verdict == NOISE:
                    row.append(Text("within noise", style="dim"))
                elif d.pct is None:
                    row.append(Text("-", style="dim"))
                else:
                    row.append(Text(f"{d.pct:+.1f}%", style=VERDICT_STYLE[d.verdict]))
        t.add_row(*row)
    return t


class RunsScreen(CniscopeScreen):
    TITLE_TEXT = "Runs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("g", "reload", "Reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[RunSummary] = []
        self.marked: list[str] = []
        self.loaded = False

    def compose_body(self) -> ComposeResult:
        table: DataTable[str | Text] = DataTable(id="runs", cursor_type="row")
        yield table
        with VerticalScroll(id="compare-box"):
            yield Static("loading runs…", id="compare")

    def setup(self) -> None:
        table = self.query_one("#runs", DataTable)
        for key, label in (("mark", "✓"), ("id", "RUN"), ("label", "LABEL"), ("status", "STATUS"),
                           ("created", "CREATED"), ("fp", "FINGERPRINT")):
            table.add_column(label, key=key)
        self.action_reload()
        table.focus()

    @work(group="runs", exclusive=True)
    async def action_reload(self) -> None:
        out = self.query_one("#compare", Static)
        try:
            self.runs = await self.capp.client.list_runs()
        except RunsUnavailable as exc:
            out.update(Text(str(exc), style="yellow"))
            return
        except Exception as exc:  # a worker must never take the app down
            self.notify(str(exc), title="runs", severity="error")
            return
        self.loaded = True
        self.marked = [rid for rid in self.marked if any(r.run_id == rid for r in self.runs)]
        self._fill()
        if not self.runs:
            out.update(Text("no stored runs yet: `cniscope bench run` stores one", style="yellow"))
        elif len(self.marked) >= 2:
            self.action_compare()
        else:
            out.update(Text("space: mark runs · c: compare the marked runs (two or more)", style="dim"))

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        if self._ready:
            self.action_reload()  # runs finish while other screens are showing

    def _fill(self) -> None:
        table = self.query_one("#runs", DataTable)
        row = table.cursor_row
        table.clear()
        for r in self.runs:
            fp = ", ".join(f"{k}={v}" for k, v in r.fingerprint.items())
            table.add_row("✓" if r.run_id in self.marked else " ", r.run_id, r.label,
                          Text(r.status, style=STATUS_STYLE.get(r.status, "")), r.created,
                          Text(fp, style="dim", overflow="ellipsis", no_wrap=True), key=r.run_id)
        table.move_cursor(row=min(row, table.row_count - 1))

    def action_mark(self) -> None:
        table = self.query_one("#runs", DataTable)
        if table.row_count == 0:
            return
        rid = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        if rid in self.marked:
            self.marked.remove(rid)
        else:
            self.marked.append(rid)
        table.update_cell(rid, "mark", "✓" if rid in self.marked else " ")

    def action_compare(self) -> None:
        chosen = [r for rid in self.marked for r in self.runs if r.run_id == rid]
        if len(chosen) < 2:
            self.notify("mark two or more runs with space first", severity="warning")
            return
        self.query_one("#compare", Static).update(comparison_table(chosen))

    @on(DataTable.RowSelected, "#runs")
    def _select(self) -> None:
        self.action_mark()
