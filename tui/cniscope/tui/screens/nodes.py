"""Nodes: one row per node, live; sortable, filterable; Enter opens the node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Input, Static

from cniscope.api.v1 import common_pb2
from cniscope.core.render import STATUS
from cniscope.tui.screens.nodes_columns import BY_KEY, COLUMNS, Cell, Column
from cniscope.tui.screens.screen_frame import CniscopeScreen
from cniscope.tui.widgets.livetable import ColumnSpec, LiveTable

STATIC = {"nat", "proxy", "fill", "xdp"}  # derived from the capability report only
SORTABLE = ("node", "status", "cni_cpu", "cni_rss", "agent_cpu", "nat", "rtt", "drops", "skew")
NODE_MAX = 24


def _spec(c: Column) -> ColumnSpec:
    if c.key == "node":
        return ColumnSpec(c.key, c.label, 8, NODE_MAX)
    room = len(c.label) + 2 if c.key in SORTABLE else 0  # the sort arrow never widens a column later
    return ColumnSpec(c.key, c.label, max(c.width, room), right=c.right)


class NodesScreen(CniscopeScreen):
    TITLE_TEXT = "Nodes"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort_next", "Sort"),
        Binding("S", "sort_reverse", "Reverse sort", show=False),
        Binding("r", "rtt('host')", "RTT host→host"),
        Binding("R", "rtt('pod')", "RTT pod→pod", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_key = "node"
        self.sort_reverse = False
        self.filter_text = ""
        self._filter_focus_pending = False
        self._order: list[str] = []                       # every node, sorted
        self._sortval: dict[str, float | str] = {}
        self._static: dict[str, tuple[tuple[int, int], dict[str, Cell]]] = {}
        self._seen = 0
        self._pairs_seen = 0
        self._probe_line = ""

    def compose_body(self) -> ComposeResult:
        yield LiveTable([_spec(c) for c in COLUMNS], self._row, id="nodes")
        yield Input(placeholder="filter: node name, status, address or label (Esc clears)",
                    id="filter", classes="hidden")
        yield Static("", id="probe")

    @property
    def table(self) -> LiveTable:
        return self.query_one("#nodes", LiveTable)

    def setup(self) -> None:
        self._label_sort()
        self.table.focus()

    def _label_sort(self) -> None:
        arrow = " ▼" if self.sort_reverse else " ▲"
        for c in COLUMNS:
            self.table.set_label(c.key, c.label + (arrow if c.key == self.sort_key else ""))

    # ---- data ------------------------------------------------------------------------------
    def _matches(self, name: str) -> bool:
        st = self.model.nodes[name]
        hay = " ".join([name, STATUS.get(st.status, ""), st.host_ip, st.pod_ip,
                        *(f"{k}={v}" for k, v in st.labels.items())]).lower()
        return all(part in hay for part in self.filter_text.lower().split())

    def _row(self, name: str) -> list[Cell]:
        """Cells of one row; columns read from the capability report are reused until it changes."""
        m = self.model
        st = m.nodes[name]
        capkey = (st.capabilities.time_unix_nano, len(st.capabilities.units))
        hit = self._static.get(name)
        if hit is None or hit[0] != capkey:
            hit = (capkey, {c.key: c.cell(m, st) for c in COLUMNS if c.key in STATIC})
            self._static[name] = hit
        static = hit[1]
        return [static[c.key] if c.key in STATIC else c.cell(m, st) for c in COLUMNS]

    def sync(self) -> None:
        if self.capp.probe_line != self._probe_line:
            self._probe_line = self.capp.probe_line
            self.query_one("#probe", Static).update(self._probe_line)
        m = self.model
        if m.seq == self._seen:
            return
        changed = [n for n, v in m.node_seq.items() if v > self._seen]
        rtt = m.pair_seq > self._pairs_seen  # the RTT column depends on probe results
        self._seen, self._pairs_seen = m.seq, m.pair_seq
        new = [n for n in changed if n not in self._sortval]
        if new:
            self.table.grow("node", max(len(n) for n in new))
        moved = self._sort_values(list(m.nodes) if rtt and self.sort_key == "rtt" else changed)
        if moved or new or (self.filter_text and changed):
            self._show()
        if rtt:
            self.table.invalidate_all()
        else:
            self.table.invalidate(changed)

    def _sort_values(self, names: Sequence[str]) -> bool:
        """Refresh the sort key of these nodes; True when one moved."""
        col, m = BY_KEY[self.sort_key], self.model
        moved = False
        for n in names:
            v = col.sort(m, m.nodes[n])
            if self._sortval.get(n) != v:
                self._sortval[n] = v
                moved = True
        if moved:
            vals = self._sortval
            self._order = sorted(vals, key=lambda n: (vals[n], n), reverse=self.sort_reverse)
        return moved

    def _show(self) -> None:
        rows = [n for n in self._order if self._matches(n)] if self.filter_text else self._order
        self.table.set_rows(rows)

    def resort(self) -> None:
        """A new sort order: the view goes to its top row."""
        self._sortval.clear()
        self._sort_values(list(self.model.nodes))
        self._label_sort()
        self._show()
        self.table.move_cursor(0)

    # ---- actions ---------------------------------------------------------------------------
    def action_sort_next(self) -> None:
        i = SORTABLE.index(self.sort_key) if self.sort_key in SORTABLE else -1
        self.sort_by(SORTABLE[(i + 1) % len(SORTABLE)])

    def sort_by(self, key: str) -> None:
        self.sort_key = key
        self.sort_reverse = key not in ("node", "status")  # biggest first for figures
        self.resort()

    def action_sort_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self.resort()

    @on(LiveTable.HeaderSelected, "#nodes")
    def _header(self, ev: LiveTable.HeaderSelected) -> None:
        if ev.column == self.sort_key:
            self.action_sort_reverse()
        elif ev.column in SORTABLE:
            self.sort_by(ev.column)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.remove_class("hidden")
        self._filter_focus_pending = True
        box.focus()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if event.widget.id == "filter":
            self._filter_focus_pending = False

    def on_key(self, event: events.Key) -> None:
        """Keys typed right after '/' (a paste, or a fast typist over ssh) can arrive before the
        filter box has focus; they belong to the filter, not to the table's bindings."""
        box = self.query_one("#filter", Input)
        if event.key == "slash" and not box.has_focus and not self._filter_focus_pending:
            # at once, not as a binding: bindings run after keys already queued behind this one
            self.action_filter()
            event.stop()
            event.prevent_default()
            return
        if not self._filter_focus_pending or not event.is_printable or not event.character:
            return
        if box.has_focus:
            self._filter_focus_pending = False
            return
        box.insert_text_at_cursor(event.character)
        event.stop()
        event.prevent_default()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.add_class("hidden")
        self.set_filter("")
        self.table.focus()

    def set_filter(self, text: str) -> None:
        if text != self.filter_text:
            self.filter_text = text
            self._show()
            self.table.move_cursor(0)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, ev: Input.Changed) -> None:
        self.set_filter(ev.value.strip())

    @on(Input.Submitted, "#filter")
    def _filter_done(self, ev: Input.Submitted) -> None:
        if not ev.value.strip():
            ev.input.add_class("hidden")
        self.table.focus()

    @on(LiveTable.Selected, "#nodes")
    def _open(self, ev: LiveTable.Selected) -> None:
        self.capp.open_node(ev.key)

    def selected_node(self) -> str | None:
        return self.table.cursor_key

    def visible_nodes(self) -> list[str]:
        return list(self.table.keys)

    def action_rtt(self, path: str) -> None:
        names = self.visible_nodes()
        if len(names) < 2:
            self.notify("need at least two nodes", severity="warning")
            return
        src = self.selected_node() or names[0]
        dst = names[(names.index(src) + 1) % len(names)]
        self.capp.fire_probe(common_pb2.ProbeRequest(kind="rtt", source_node=src, target_node=dst, path=path,
                                                     params={"count": "10", "interval": "0.05"}))
