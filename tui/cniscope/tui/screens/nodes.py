"""Nodes: one row per node, live; sortable, filterable; Enter opens the node."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input, Static

from cniscope.api.v1 import common_pb2
from cniscope.core.render import STATUS
from cniscope.tui.screens.base import CniscopeScreen
from cniscope.tui.screens.nodes_columns import BY_KEY, COLUMNS, Cell

STATIC = {"nat", "proxy", "fill", "xdp"}  # derived from the capability report only
SORTABLE = ("node", "status", "cni_cpu", "cni_rss", "agent_cpu", "nat", "rtt", "drops", "skew")


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
        self._cells: dict[str, dict[str, Cell]] = {}
        self._capkeys: dict[str, tuple[int, int]] = {}
        self._seen = 0
        self._pairs_seen = 0
        self._width = 0
        self._probe_line = ""

    def compose_body(self) -> ComposeResult:
        table: DataTable[Cell] = DataTable(id="nodes", cursor_type="row", zebra_stripes=True)
        yield table
        yield Input(placeholder="filter: node name, status, address or label (Esc clears)",
                    id="filter", classes="hidden")
        yield Static("", id="probe")

    def setup(self) -> None:
        self._add_columns()
        self.query_one("#nodes").focus()

    def _add_columns(self) -> None:
        table = self.query_one("#nodes", DataTable)
        names = list(self.model.nodes)
        self._width = max(8, min(24, max((len(n) for n in names), default=8)))
        for c in COLUMNS:
            label = c.label + (" ▼" if c.key == self.sort_key and self.sort_reverse else
                               " ▲" if c.key == self.sort_key else "")
            table.add_column(label, key=c.key, width=self._width if c.key == "node" else c.width)

    # ---- data ------------------------------------------------------------------------------
    def _matches(self, name: str) -> bool:
        if not self.filter_text:
            return True
        st = self.model.nodes[name]
        hay = " ".join([name, STATUS.get(st.status, ""), st.host_ip, st.pod_ip,
                        *(f"{k}={v}" for k, v in st.labels.items())]).lower()
        return all(part in hay for part in self.filter_text.lower().split())

    def _row(self, name: str) -> dict[str, Cell]:
        """Cells of one row; columns read from the capability report are reused until it changes."""
        st = self.model.nodes[name]
        capkey = (st.capabilities.time_unix_nano, len(st.capabilities.units))
        old = self._cells.get(name)
        if old is not None and self._capkeys.get(name) == capkey:
            return {c.key: (c.cell(self.model, st) if c.key not in STATIC else old[c.key]) for c in COLUMNS}
        self._capkeys[name] = capkey
        return {c.key: c.cell(self.model, st) for c in COLUMNS}

    def rebuild(self) -> None:
        """Whole-table redraw: only for filter/width changes, never on the refresh tick."""
        table = self.query_one("#nodes", DataTable)
        table.clear(columns=True)
        self._cells.clear()
        self._add_columns()
        self._seen = 0
        self.sync()

    def sync(self) -> None:
        if self.capp.probe_line != self._probe_line:
            self._probe_line = self.capp.probe_line
            self.query_one("#probe", Static).update(self._probe_line)
        m = self.model
        table = self.query_one("#nodes", DataTable)
        if m.nodes and max(len(n) for n in m.nodes) > self._width and self._width < 24:
            self.rebuild()
            return
        new = [n for n in m.nodes if n not in self._cells and self._matches(n)]
        changed = [n for n, v in m.node_seq.items() if v > self._seen and n in self._cells]
        if m.pair_seq > self._pairs_seen:  # the RTT column depends on probe results
            changed = list(self._cells)
            self._pairs_seen = m.pair_seq
        self._seen = m.seq
        if new:
            rows = []
            for n in new:
                cells = self._row(n)
                self._cells[n] = cells
                rows.append([cells[c.key] for c in COLUMNS])
            keys = new
            for r, k in zip(rows, keys, strict=True):
                table.add_row(*r, key=k)
        updated = False
        for n in changed:
            old = self._cells[n]
            cells = self._row(n)
            for key, value in cells.items():
                if old[key] != value:
                    table.update_cell(n, key, value)
                    updated = updated or key == self.sort_key
            self._cells[n] = cells
        if new or updated:
            self.resort()

    def resort(self) -> None:
        col = BY_KEY[self.sort_key]
        m = self.model
        order = {n: col.sort(m, m.nodes[n]) for n in self._cells}
        table = self.query_one("#nodes", DataTable)
        table.sort("node", key=lambda name: (order.get(str(name), 0), str(name)), reverse=self.sort_reverse)

    # ---- actions ---------------------------------------------------------------------------
    def action_sort_next(self) -> None:
        i = SORTABLE.index(self.sort_key) if self.sort_key in SORTABLE else -1
        self.sort_key = SORTABLE[(i + 1) % len(SORTABLE)]
        self.sort_reverse = self.sort_key not in ("node", "status")  # biggest first for figures
        self.rebuild()

    def action_sort_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self.rebuild()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.remove_class("hidden")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.add_class("hidden")
        self.set_filter("")
        self.query_one("#nodes").focus()

    def set_filter(self, text: str) -> None:
        if text != self.filter_text:
            self.filter_text = text
            self.rebuild()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, ev: Input.Changed) -> None:
        self.set_filter(ev.value.strip())

    @on(Input.Submitted, "#filter")
    def _filter_done(self, ev: Input.Submitted) -> None:
        if not ev.value.strip():
            ev.input.add_class("hidden")
        self.query_one("#nodes").focus()

    @on(DataTable.RowSelected, "#nodes")
    def _open(self, ev: DataTable.RowSelected) -> None:
        if ev.row_key.value is not None:
            self.capp.open_node(str(ev.row_key.value))

    def selected_node(self) -> str | None:
        table = self.query_one("#nodes", DataTable)
        if table.row_count == 0:
            return None
        row = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return str(row.value) if row.value is not None else None

    def visible_nodes(self) -> list[str]:
        table = self.query_one("#nodes", DataTable)
        return [str(r.key.value) for r in table.ordered_rows]

    def action_rtt(self, path: str) -> None:
        names = self.visible_nodes()
        if len(names) < 2:
            self.notify("need at least two nodes", severity="warning")
            return
        src = self.selected_node() or names[0]
        dst = names[(names.index(src) + 1) % len(names)]
        self.capp.fire_probe(common_pb2.ProbeRequest(kind="rtt", source_node=src, target_node=dst, path=path,
                                                     params={"count": "10", "interval": "0.05"}))
