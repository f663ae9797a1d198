"""Log: collector events — agents connecting and leaving, drops, refused commands, link changes."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import RichLog

from cniscope.tui.cluster_model import LogEntry
from cniscope.tui.screens.screen_frame import CniscopeScreen

LEVEL_STYLE = {"info": "", "warning": "yellow", "error": "bold red"}


def line(e: LogEntry) -> Text:
    when = dt.datetime.fromtimestamp(e.time_ns / 1e9, dt.UTC).strftime("%H:%M:%S") if e.time_ns else "--:--:--"
    t = Text(no_wrap=False)
    t.append(when + " ", style="dim")
    t.append(f"{e.level:<7} ", style=LEVEL_STYLE.get(e.level, ""))
    if e.node:
        t.append(f"{e.node}: ", style="bold")
    t.append(e.message)
    return t


class LogScreen(CniscopeScreen):
    TITLE_TEXT = "Log"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("w", "wrap", "Wrap")]

    def __init__(self) -> None:
        super().__init__()
        self._total_seen = 0   # model.log_total already written

    def compose_body(self) -> ComposeResult:
        yield RichLog(id="log", max_lines=5000, wrap=True, markup=False)

    def sync(self) -> None:
        m = self.model
        total = m.log_total
        if total == self._total_seen:
            return
        fresh = min(total - self._total_seen, len(m.log))
        out = self.query_one("#log", RichLog)
        for e in list(m.log)[len(m.log) - fresh:]:
            out.write(line(e))
        self._total_seen = total

    def action_wrap(self) -> None:
        out = self.query_one("#log", RichLog)
        out.wrap = not out.wrap
