"""The live terminal UI: every node, live, and probes fired from the keyboard."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Header, RichLog, Static

from cniscope.api.v1 import cluster_pb2, common_pb2
from cniscope.core.errors import CniscopeError
from cniscope.core.render import STATUS, ago, probe_result_text
from cniscope.tui.client import ClusterClient, ConnectionState, GrpcClusterClient, ReplayClient

COLUMNS: list[tuple[str, str]] = [
    ("node", "NODE"), ("status", "STATUS"), ("host_ip", "HOST IP"), ("pod_ip", "POD IP"),
    ("seen", "LAST SEEN"), ("cpu", "CPU m"), ("rss", "RSS MiB"), ("version", "VERSION"),
]
STATUS_STYLE = {1: "green", 2: "yellow", 3: "red"}


class CniscopeApp(App[None]):
    TITLE = "cniscope"
    CSS = """
    #nodes { height: 1fr; }
    #probe { height: auto; min-height: 3; border: round $accent; padding: 0 1; }
    #log { height: 8; border: round $panel; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "rtt('host')", "RTT host→host"),
        Binding("R", "rtt('pod')", "RTT pod→pod"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, client: ClusterClient, clock: Any = None) -> None:
        super().__init__()
        self.client = client
        self.nodes: dict[str, cluster_pb2.NodeState] = {}
        self.connected = False
        self.last_result: common_pb2.ProbeResult | None = None
        self._clock = clock or time.time_ns

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Vertical():
            table: DataTable[Any] = DataTable(id="nodes", cursor_type="row", zebra_stripes=True)
            yield table
            yield Static("press r to measure RTT from the selected node to the next one (R: pod to pod)",
                         id="probe")
            yield RichLog(id="log", max_lines=500, markup=False, wrap=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#nodes", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self._set_connection(False, "connecting…")
        self.watch_events()
        self.set_interval(1.0, self._tick)

    def _set_connection(self, up: bool, detail: str = "") -> None:
        self.connected = up
        state = "connected" if up else f"disconnected{': ' + detail if detail else ''}"
        self.sub_title = f"{self.client.address} · {len(self.nodes)} nodes · {state}"

    @work(exclusive=True, group="watch")
    async def watch_events(self) -> None:
        async for ev in self.client.events():
            if isinstance(ev, ConnectionState):
                self._set_connection(ev.connected, ev.detail)
                if not ev.connected:
                    self._log_line(f"collector unreachable: {ev.detail}")
                continue
            which = ev.WhichOneof("body")
            if which == "node":
                self._upsert(ev.node)
            elif which == "probe_result":
                self._show_result(ev.probe_result)
            elif which == "log":
                self._log_line(f"{ev.log.node + ': ' if ev.log.node else ''}{ev.log.message}")
            elif which == "snapshot_done":
                self._set_connection(True)

    def _log_line(self, text: str) -> None:
        self.query_one("#log", RichLog).write(text)

    def _cells(self, st: cluster_pb2.NodeState) -> dict[str, Any]:
        cpu = st.figures.get("agent_cpu_millicores")
        rss = st.figures.get("agent_rss_bytes")
        status = STATUS.get(st.status, "?")
        style = STATUS_STYLE.get(st.status, "")
        return {
            "node": st.node,
            "status": f"[{style}]{status}[/]" if style else status,
            "host_ip": st.host_ip, "pod_ip": st.pod_ip,
            "seen": ago(st.last_seen_unix_nano, self._clock()),
            "cpu": f"{cpu:.1f}" if cpu is not None else "-",
            "rss": f"{rss / 2**20:.0f}" if rss is not None else "-",
            "version": st.agent_version,
        }

    def _upsert(self, st: cluster_pb2.NodeState) -> None:
        from rich.text import Text

        table = self.query_one("#nodes", DataTable)
        cells = {k: Text.from_markup(v) if k == "status" else v for k, v in self._cells(st).items()}
        if st.node in self.nodes:
            old = self._cells(self.nodes[st.node])
            for key, _ in COLUMNS:
                if old[key] != self._cells(st)[key]:
                    table.update_cell(st.node, key, cells[key])
        else:
            table.add_row(*(cells[k] for k, _ in COLUMNS), key=st.node)
        copy = cluster_pb2.NodeState()
        copy.CopyFrom(st)
        self.nodes[st.node] = copy
        self._set_connection(self.connected)

    def _tick(self) -> None:
        table = self.query_one("#nodes", DataTable)
        for name, st in self.nodes.items():
            table.update_cell(name, "seen", ago(st.last_seen_unix_nano, self._clock()))

    def _show_result(self, r: common_pb2.ProbeResult) -> None:
        self.last_result = r
        self.query_one("#probe", Static).update(probe_result_text(r))

    def action_rtt(self, path: str) -> None:
        table = self.query_one("#nodes", DataTable)
        names = [str(k.value) for k in table.rows]
        if len(names) < 2:
            self.notify("need at least two nodes", severity="warning")
            return
        src = names[table.cursor_row] if 0 <= table.cursor_row < len(names) else names[0]
        dst = names[(names.index(src) + 1) % len(names)]
        self.fire_probe(common_pb2.ProbeRequest(kind="rtt", source_node=src, target_node=dst, path=path,
                                                params={"count": "10", "interval": "0.05"}))

    @work(group="probes")
    async def fire_probe(self, req: common_pb2.ProbeRequest) -> None:
        panel = self.query_one("#probe", Static)
        panel.update(f"{req.kind} {req.source_node} → {req.target_node} ({req.path}) …")
        try:
            async for upd in self.client.run_probe(req):
                if upd.WhichOneof("body") == "progress":
                    panel.update(f"{req.kind} {req.source_node} → {req.target_node} ({req.path}) "
                                 f"{upd.progress.fraction:.0%} {upd.progress.message}")
                else:
                    self._show_result(upd.result)
        except CniscopeError as exc:
            self.notify(str(exc), title=exc.title, severity="error")
            panel.update(f"{req.kind} {req.source_node} → {req.target_node}: {exc.title}: {exc}")

    async def on_unmount(self) -> None:
        await self.client.close()


def make_client(collector: str, replay: str | None, record: str | None) -> ClusterClient:
    if replay:
        return ReplayClient(replay)
    return GrpcClusterClient(collector, record=record)


def run_tui(collector: str, replay: str | None = None, record: str | None = None) -> int:
    app = CniscopeApp(make_client(collector, replay, record))
    app.run()
    return 0
